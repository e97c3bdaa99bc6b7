"""Small per-source state that providers keep between invocations (a PBX API token).

Stored in the ledger table under ``pk = SOURCE#{source_id}``, ``sk = STATE#{name}``, so that
one token is shared by every container instead of each one logging in.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError


class ProviderState:
    def __init__(self, table: Any) -> None:
        self._table = table

    @staticmethod
    def _key(source_id: str, name: str) -> dict[str, str]:
        return {"pk": f"SOURCE#{source_id}", "sk": f"STATE#{name}"}

    def get(self, source_id: str, name: str) -> dict[str, Any] | None:
        item = self._table.get_item(Key=self._key(source_id, name), ConsistentRead=True).get("Item")
        return dict(item) if item else None

    def put(self, source_id: str, name: str, values: dict[str, Any]) -> None:
        self._table.put_item(Item={**self._key(source_id, name), **values})

    def delete_if(self, source_id: str, name: str, attribute: str, expected: str) -> None:
        """Delete the state only if it still holds ``expected`` (another container may have renewed it)."""
        try:
            self._table.delete_item(
                Key=self._key(source_id, name),
                ConditionExpression="#a = :v",
                ExpressionAttributeNames={"#a": attribute},
                ExpressionAttributeValues={":v": expected},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
