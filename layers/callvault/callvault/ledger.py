"""The recording ledger: one DynamoDB item per recording file, the archive's source of truth.

Item key: ``pk = CALL#{source_id}#{call_id}``, ``sk = FILE#{file_name}`` (``FILE#*`` for a call
whose files are not known yet). Status moves DOWNLOADING → STORED, or → RETRY_SCHEDULED and
back, or → FAILED (when the fetcher gives up it records FAILED at once and hands the job to the
retry workflow, which writes FAILED again, idempotently, and notifies operators).

A fetch first *claims* the item with a conditional write and a lease: of two deliveries of
the same job only one downloads, and a STORED file is never downloaded again.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any

from botocore.exceptions import ClientError

from callvault.models import FetchJob, StoredObject
from callvault.timefmt import iso, utc_now


class Status(str, Enum):
    DOWNLOADING = "DOWNLOADING"
    STORED = "STORED"
    RETRY_SCHEDULED = "RETRY_SCHEDULED"
    FAILED = "FAILED"


class ClaimOutcome(str, Enum):
    CLAIMED = "claimed"
    ALREADY_STORED = "already-stored"
    IN_PROGRESS = "in-progress"


@dataclass(frozen=True)
class Claim:
    key: dict[str, str]
    lease_id: str
    outcome: ClaimOutcome
    s3_key: str


def ledger_key(job: FetchJob, file_name: str | None = None) -> dict[str, str]:
    return {"pk": f"CALL#{job.source_id}#{job.call_id}", "sk": f"FILE#{file_name or job.file_name}"}


class RecordingLedger:
    def __init__(self, table: Any) -> None:
        self._table = table

    def claim(self, job: FetchJob, file_name: str, s3_key: str, lease_seconds: int) -> Claim:
        """Take the file for this attempt unless it is stored or another delivery holds it."""
        key = ledger_key(job, file_name)
        lease_id = uuid.uuid4().hex
        now = utc_now()
        epoch = int(now.timestamp())
        try:
            self._update(
                key,
                set_values={
                    "status": Status.DOWNLOADING.value,
                    "lease_id": lease_id,
                    "lease_until": epoch + lease_seconds,
                    "updated_at": iso(now),
                    "source_id": job.source_id,
                    "call_id": job.call_id,
                    "file_name": file_name,
                    "provider": job.provider,
                    "call_time": job.call_time,
                    "s3_key": s3_key,
                    "job_attempt": job.attempt,
                },
                set_if_absent={"created_at": iso(now)},
                increment="attempts",
                condition=(
                    "attribute_not_exists(#pk) OR (#status <> :stored"
                    " AND (attribute_not_exists(#lease_until) OR #lease_until < :epoch))"
                ),
                condition_values={":stored": Status.STORED.value, ":epoch": epoch},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            current = self.get(key) or {}
            stored = current.get("status") == Status.STORED.value
            return Claim(key, "", ClaimOutcome.ALREADY_STORED if stored else ClaimOutcome.IN_PROGRESS, s3_key)
        return Claim(key, lease_id, ClaimOutcome.CLAIMED, s3_key)

    def mark_stored(self, claim: Claim, stored: StoredObject) -> bool:
        """Record the stored object; False if the lease was lost meanwhile (it expired during a
        very slow transfer and another delivery took the file over: its record wins)."""
        now = iso(utc_now())
        try:
            self._record_stored(claim, stored, now)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def _record_stored(self, claim: Claim, stored: StoredObject, now: str) -> None:
        self._update(
            claim.key,
            set_values={
                "status": Status.STORED.value,
                "size": stored.size,
                "sha256": stored.sha256,
                "bucket": stored.bucket,
                "s3_key": stored.key,
                "version_id": stored.version_id or "",
                "content_type": stored.content_type,
                "stored_at": now,
                "updated_at": now,
            },
            remove=("lease_id", "lease_until", "reason"),
            condition="#lease_id = :lease_id",
            condition_values={":lease_id": claim.lease_id},
        )

    def release(self, job: FetchJob, key: dict[str, str], status: Status, reason: str, lease_id: str | None) -> None:
        """Record why this attempt did not store the file, and free the lease for the next one."""
        now = iso(utc_now())
        # Never overwrite a STORED file; with a lease, only if we still hold it (else it
        # expired and another delivery took over: theirs is the truth).
        condition = "(attribute_not_exists(#status) OR #status <> :stored)"
        values: dict[str, Any] = {":stored": Status.STORED.value}
        if lease_id:
            condition += " AND #lease_id = :lease_id"
            values[":lease_id"] = lease_id
        try:
            self._update(
                key,
                set_values={
                    "status": status.value,
                    "reason": reason,
                    "updated_at": now,
                    "source_id": job.source_id,
                    "call_id": job.call_id,
                    "provider": job.provider,
                },
                set_if_absent={"created_at": now},
                remove=("lease_id", "lease_until"),
                condition=condition,
                condition_values=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def forget(self, key: dict[str, str]) -> None:
        self._table.delete_item(Key=key)

    def get(self, key: dict[str, str]) -> dict[str, Any] | None:
        item = self._table.get_item(Key=key, ConsistentRead=True).get("Item")
        return dict(item) if item else None

    def _update(
        self,
        key: dict[str, str],
        *,
        set_values: dict[str, Any],
        set_if_absent: dict[str, Any] | None = None,
        increment: str | None = None,
        remove: tuple[str, ...] = (),
        condition: str,
        condition_values: dict[str, Any],
    ) -> None:
        """One conditional UpdateItem; every attribute goes through a #name (DynamoDB reserves
        words such as status, size and bucket)."""
        names: dict[str, str] = {}
        values: dict[str, Any] = dict(condition_values)

        def name(attribute: str) -> str:
            names[f"#{attribute}"] = attribute
            return f"#{attribute}"

        assignments = []
        for attribute, value in set_values.items():
            values[f":{attribute}"] = value
            assignments.append(f"{name(attribute)} = :{attribute}")
        for attribute, value in (set_if_absent or {}).items():
            values[f":{attribute}"] = value
            assignments.append(f"{name(attribute)} = if_not_exists({name(attribute)}, :{attribute})")
        if increment:
            values[":zero"], values[":one"] = 0, 1
            assignments.append(f"{name(increment)} = if_not_exists({name(increment)}, :zero) + :one")
        expression = "SET " + ", ".join(assignments)
        if remove:
            expression += " REMOVE " + ", ".join(name(attribute) for attribute in remove)
        for attribute in re.findall(r"#(\w+)", condition):
            name(attribute)
        self._table.update_item(
            Key=key,
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )


def lease_seconds_for(remaining_ms: int) -> int:
    """A lease a little longer than this invocation can live: a crashed holder frees it soon."""
    return max(60, remaining_ms // 1000 + 60)
