"""The recording ledger: one DynamoDB item per recording file, the archive's source of truth.

Item key: ``pk = CALL#{source_id}#{call_id}``, ``sk = FILE#{file_name}`` (``FILE#*`` for a call
whose files are not known yet). Status moves DOWNLOADING → STORED, or → RETRY_SCHEDULED and
back, or → FAILED (written by the retry workflow when it gives up).

A fetch first *claims* the item with a conditional write and a lease: of two deliveries of
the same job only one downloads, and a STORED file is never downloaded again.
"""

from __future__ import annotations

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
        try:
            self._table.update_item(
                Key=key,
                UpdateExpression=(
                    "SET #status = :downloading, lease_id = :lease_id, lease_until = :lease_until,"
                    " attempts = if_not_exists(attempts, :zero) + :one, updated_at = :now,"
                    " created_at = if_not_exists(created_at, :now), source_id = :source_id,"
                    " call_id = :call_id, file_name = :file_name, provider = :provider,"
                    " call_time = :call_time, s3_key = :s3_key, job_attempt = :job_attempt"
                ),
                ConditionExpression=(
                    "attribute_not_exists(pk) OR (#status <> :stored"
                    " AND (attribute_not_exists(lease_until) OR lease_until < :epoch))"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":downloading": Status.DOWNLOADING.value,
                    ":stored": Status.STORED.value,
                    ":lease_id": lease_id,
                    ":lease_until": int(now.timestamp()) + lease_seconds,
                    ":epoch": int(now.timestamp()),
                    ":zero": 0,
                    ":one": 1,
                    ":now": iso(now),
                    ":source_id": job.source_id,
                    ":call_id": job.call_id,
                    ":file_name": file_name,
                    ":provider": job.provider,
                    ":call_time": job.call_time,
                    ":s3_key": s3_key,
                    ":job_attempt": job.attempt,
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            current = self.get(key) or {}
            stored = current.get("status") == Status.STORED.value
            return Claim(key, "", ClaimOutcome.ALREADY_STORED if stored else ClaimOutcome.IN_PROGRESS)
        return Claim(key, lease_id, ClaimOutcome.CLAIMED)

    def mark_stored(self, claim: Claim, stored: StoredObject) -> None:
        now = iso(utc_now())
        self._table.update_item(
            Key=claim.key,
            UpdateExpression=(
                "SET #status = :stored, #size = :size, sha256 = :sha256, bucket = :bucket, s3_key = :key,"
                " version_id = :version, content_type = :ctype, stored_at = :now, updated_at = :now"
                " REMOVE lease_id, lease_until, reason"
            ),
            ConditionExpression="lease_id = :lease_id",
            ExpressionAttributeNames={"#status": "status", "#size": "size"},
            ExpressionAttributeValues={
                ":stored": Status.STORED.value,
                ":size": stored.size,
                ":sha256": stored.sha256,
                ":bucket": stored.bucket,
                ":key": stored.key,
                ":version": stored.version_id or "",
                ":ctype": stored.content_type,
                ":now": now,
                ":lease_id": claim.lease_id,
            },
        )

    def release(self, job: FetchJob, key: dict[str, str], status: Status, reason: str, lease_id: str | None) -> None:
        """Record why this attempt did not store the file, and free the lease for the next one."""
        values: dict[str, Any] = {
            ":status": status.value,
            ":reason": reason,
            ":now": iso(utc_now()),
            ":source_id": job.source_id,
            ":call_id": job.call_id,
            ":provider": job.provider,
            ":stored": Status.STORED.value,
        }
        # Never overwrite a STORED file; with a lease, only if we still hold it (else it
        # expired and another delivery took over: theirs is the truth).
        condition = "attribute_not_exists(#status) OR #status <> :stored"
        if lease_id:
            condition = f"({condition}) AND lease_id = :lease_id"
            values[":lease_id"] = lease_id
        try:
            self._table.update_item(
                Key=key,
                UpdateExpression=(
                    "SET #status = :status, reason = :reason, updated_at = :now,"
                    " created_at = if_not_exists(created_at, :now), source_id = :source_id,"
                    " call_id = :call_id, provider = :provider REMOVE lease_id, lease_until"
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def get(self, key: dict[str, str]) -> dict[str, Any] | None:
        item = self._table.get_item(Key=key, ConsistentRead=True).get("Item")
        return dict(item) if item else None

    def files_of_call(self, source_id: str, call_id: str) -> list[dict[str, Any]]:
        from boto3.dynamodb.conditions import Key

        reply = self._table.query(KeyConditionExpression=Key("pk").eq(f"CALL#{source_id}#{call_id}"))
        return [dict(item) for item in reply.get("Items", [])]


def lease_seconds_for(remaining_ms: int) -> int:
    """A lease a little longer than this invocation can live: a crashed holder frees it soon."""
    return max(60, remaining_ms // 1000 + 60)
