"""Signed deliveries already received, so an exact replay inside the signature's window is refused.

A signed request (``X-Callvault-Timestamp`` + ``X-Callvault-Signature``, see webhook.py) is valid
for ``SIGNATURE_WINDOW`` seconds either side of its timestamp: anyone who sees it in that time
could send it again. Each one is remembered in the ledger table under the hash of its timestamp
and body (``pk = SIGNED#{source}#{sha256}``, ``sk = DELIVERY``) with a conditional put, so of
two identical deliveries, even at the same moment, only the first passes. The item carries the
table's TTL attribute ``expires_at``: DynamoDB removes it once the timestamp is out of the
window, when the window check refuses a replay by itself. The items have none of the ledger
indexes' attributes, so operators' queries never see them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cached_property
from typing import Any

from botocore.exceptions import ClientError

from callvault.errors import Conflict
from callvault.timefmt import iso, utc_now

# Kept a little past the window: our clock and DynamoDB's may differ by a few seconds.
CLOCK_MARGIN_SECONDS = 60


def delivery_key(source_id: str, timestamp: str, body: bytes) -> dict[str, str]:
    """The ledger key of one signed delivery: the same timestamp and body, the same key."""
    digest = hashlib.sha256(timestamp.encode() + b"." + body).hexdigest()
    return {"pk": f"SIGNED#{source_id}#{digest}", "sk": "DELIVERY"}


class SignedDeliveries:
    """Remembers signed deliveries in the ledger table until their signature expires."""

    def __init__(self, open_table: Callable[[], Any], window_seconds: int) -> None:
        # Opened at the first signed delivery: most sources sign nothing, and a DynamoDB table
        # resource costs about 20 ms of every cold start.
        self._open_table = open_table
        self._window = window_seconds

    @cached_property
    def _table(self) -> Any:
        return self._open_table()

    def admit(self, source_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """Remember this delivery and return its key; ``Conflict`` if it was received before."""
        key = delivery_key(source_id, str(timestamp), body)
        try:
            self._table.put_item(
                Item={
                    **key,
                    "received_at": iso(utc_now()),
                    "expires_at": timestamp + self._window + CLOCK_MARGIN_SECONDS,
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            raise Conflict(
                "this signed event was received before (an exact replay); send a new delivery with a fresh"
                " X-Callvault-Timestamp and signature"
            ) from None
        return key

    def forget(self, key: dict[str, str]) -> None:
        """Drop a delivery whose jobs could not be enqueued, so that the sender's retry of the very
        same request is not refused as a replay."""
        self._table.delete_item(Key=key)
