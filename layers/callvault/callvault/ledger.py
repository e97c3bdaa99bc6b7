"""The recording ledger: one DynamoDB item per recording file, the archive's source of truth.

Item key: ``pk = CALL#{source_id}#{call_id}``, ``sk = FILE#{file_name}``; a call whose files are
not known yet is tracked under its selector (``FILE#*``, ``FILE#*mono``) until they are.

Status of an item:
- ``QUEUED``: a job was enqueued for it by reconciliation or an operator (not yet attempted);
- ``EXPECTED``: the call ended and should have a recording whose own announcement has not come
  yet (a Dypls recording receipt); reconciliation fetches it if nothing arrives in time;
- ``DOWNLOADING`` (leased by a fetcher) → ``STORED``, or → ``RETRY_SCHEDULED`` and back;
- ``FAILED`` (given up, with the reason; operators are alerted);
- ``NO_RECORDING``: the provider has no recording of the call (never answered, or none by the
  time retries ran out for a call nothing confirmed was recorded); no alert.

A fetch first *claims* the item with a conditional write and a lease: of two deliveries of
the same job only one downloads, and a STORED file is never downloaded again.

Two sparse global secondary indexes answer operator questions without a Scan:
- ``ByStatus``: ``open_status`` (the status of every item that is not STORED) + ``updated_at``;
- ``ByCallDate``: ``source_id`` + ``call_date`` (the call's local ``yyyy-mm-dd``), every file.
A third finds what consumers are still owed (``callvault.announcements``):
- ``ByAnnouncement``: ``announce`` (``RecordingArchived`` from storing until the sidecar and the
  event are out, ``RecordingFailed`` from giving up until the event is out) + ``updated_at``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from botocore.exceptions import ClientError

from callvault.models import FetchJob, StoredObject
from callvault.timefmt import iso, utc_now

STATUS_INDEX = "ByStatus"
CALL_DATE_INDEX = "ByCallDate"
ANNOUNCEMENT_INDEX = "ByAnnouncement"
ARCHIVED = "RecordingArchived"
FAILED = "RecordingFailed"
# BatchGetItem reads at most this many keys per request.
BATCH_GET_LIMIT = 100


class Status(str, Enum):
    QUEUED = "QUEUED"
    EXPECTED = "EXPECTED"
    DOWNLOADING = "DOWNLOADING"
    STORED = "STORED"
    RETRY_SCHEDULED = "RETRY_SCHEDULED"
    FAILED = "FAILED"
    NO_RECORDING = "NO_RECORDING"
    # Erased on request (``callvault erase``): a tombstone without the job, its PII or its
    # object, kept so that a late report or a reconciliation run never archives the file again.
    ERASED = "ERASED"


class ClaimOutcome(str, Enum):
    CLAIMED = "claimed"
    ALREADY_STORED = "already-stored"
    IN_PROGRESS = "in-progress"
    ERASED = "erased"


@dataclass(frozen=True)
class Claim:
    key: dict[str, str]
    lease_id: str
    outcome: ClaimOutcome
    s3_key: str


def call_pk(source_id: str, call_id: str) -> str:
    return f"CALL#{source_id}#{call_id}"


def ledger_key(job: FetchJob, file_name: str | None = None) -> dict[str, str]:
    return {"pk": call_pk(job.source_id, job.call_id), "sk": f"FILE#{file_name or job.file_name}"}


def file_name_of(item: dict[str, Any]) -> str:
    """The file (or selector) an item tracks, read off its sort key."""
    return str(item.get("sk", "")).removeprefix("FILE#")


def _identity(job: FetchJob) -> dict[str, Any]:
    """What every item of a job carries: who it belongs to, when the call was, how to redo it.

    ``via`` is the job's file name or selector: reconciliation asks "has this selector been
    handled for this call?" without knowing the provider's file names.
    """
    return {
        "source_id": job.source_id,
        "call_id": job.call_id,
        "provider": job.provider,
        "call_time": job.call_time,
        "call_date": job.call_time[:10],
        "via": job.file_name,
        "origin": job.origin,
        "job": job.to_json(),
    }


class RecordingLedger:
    def __init__(self, table: Any) -> None:
        self._table = table

    # -- the fetcher's writes ---------------------------------------------------------------

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
                    **_identity(job),
                    "status": Status.DOWNLOADING.value,
                    "lease_id": lease_id,
                    "lease_until": epoch + lease_seconds,
                    "updated_at": iso(now),
                    "file_name": file_name,
                    "s3_key": s3_key,
                    "job_attempt": job.attempt,
                },
                set_if_absent={"created_at": iso(now)},
                increment="attempts",
                condition=(
                    "attribute_not_exists(#pk) OR (#status <> :stored AND #status <> :erased"
                    " AND (attribute_not_exists(#lease_until) OR #lease_until < :epoch))"
                ),
                condition_values={":stored": Status.STORED.value, ":erased": Status.ERASED.value, ":epoch": epoch},
            )
        except ClientError as exc:
            _unless_condition_failed(exc)
            status = (self.get(key) or {}).get("status")
            outcome = {
                Status.STORED.value: ClaimOutcome.ALREADY_STORED,
                Status.ERASED.value: ClaimOutcome.ERASED,
            }.get(str(status), ClaimOutcome.IN_PROGRESS)
            return Claim(key, "", outcome, s3_key)
        return Claim(key, lease_id, ClaimOutcome.CLAIMED, s3_key)

    def mark_stored(self, claim: Claim, stored: StoredObject) -> bool:
        """Record the stored object; False if the lease was lost meanwhile (it expired during a
        very slow transfer and another delivery took the file over: its record wins)."""
        now = iso(utc_now())
        try:
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
                    # Owed to consumers from this very write: a crash before the sidecar and the
                    # event are out leaves the debt on record for the sweep.
                    "announce": ARCHIVED,
                },
                remove=("lease_id", "lease_until", "reason"),
                condition="#lease_id = :lease_id",
                condition_values={":lease_id": claim.lease_id},
            )
        except ClientError as exc:
            _unless_condition_failed(exc)
            return False
        return True

    def release(self, job: FetchJob, key: dict[str, str], status: Status, reason: str, lease_id: str | None) -> None:
        """Record why this attempt did not store the file, and free the lease for the next one."""
        now = iso(utc_now())
        # Never overwrite a STORED file or an erasure's tombstone; with a lease, only if we still
        # hold it (else it expired and another delivery took over: theirs is the truth).
        condition = "(attribute_not_exists(#status) OR (#status <> :stored AND #status <> :erased))"
        values: dict[str, Any] = {":stored": Status.STORED.value, ":erased": Status.ERASED.value}
        if lease_id:
            condition += " AND #lease_id = :lease_id"
            values[":lease_id"] = lease_id
        try:
            self._update(
                key,
                set_values={**_identity(job), "status": status.value, "reason": reason, "updated_at": now},
                set_if_absent={"created_at": now},
                remove=("lease_id", "lease_until"),
                condition=condition,
                condition_values=values,
            )
        except ClientError as exc:
            _unless_condition_failed(exc)

    def expect(self, job: FetchJob, due_at: str) -> bool:
        """Note that the call should have a recording by ``due_at``; False if the ledger already
        knows the call (its recording was announced first, or it was noted before). A recording
        that arrives while this runs leaves a stale expectation, which reconciliation removes."""
        if self.call_items(job.source_id, job.call_id):
            return False
        reason = f"waiting until {due_at} for the provider to announce the recording"
        return self._note(job, Status.EXPECTED, reason, due_at)

    def note_no_recording(self, job: FetchJob, reason: str) -> bool:
        """The provider has no recording of this call (e.g. it was never answered); False if the
        ledger knows the call otherwise (a recording of it arrived after all: that one wins)."""
        if self.call_items(job.source_id, job.call_id):
            return False
        return self._note(job, Status.NO_RECORDING, reason)

    def mark_queued(self, job: FetchJob, reason: str) -> bool:
        """Note that a job was enqueued for this item by reconciliation or an operator, so the
        next reconciliation run does not enqueue it again; False if the ledger knows it already."""
        return self._note(job, Status.QUEUED, reason)

    def _note(self, job: FetchJob, status: Status, reason: str, due_at: str | None = None) -> bool:
        now = iso(utc_now())
        values = {**_identity(job), "status": status.value, "reason": reason, "updated_at": now, "created_at": now}
        if due_at:
            values["due_at"] = due_at
        try:
            self._update(ledger_key(job), set_values=values, condition="attribute_not_exists(#pk)", condition_values={})
        except ClientError as exc:
            _unless_condition_failed(exc)
            return False
        return True

    def move(self, key: dict[str, str], expected: Status, status: Status, reason: str, **extra: Any) -> bool:
        """Change an item's status if it still has ``expected``; False if someone moved it first."""
        now = iso(utc_now())
        try:
            self._update(
                key,
                set_values={"status": status.value, "reason": reason, "updated_at": now, **extra},
                condition="#status = :expected",
                condition_values={":expected": expected.value},
            )
        except ClientError as exc:
            _unless_condition_failed(exc)
            return False
        return True

    def annotate(self, key: dict[str, str], **values: Any) -> None:
        """Add facts to an existing item whatever its status (who asked for a retry, say)."""
        try:
            self._update(key, set_values=values, condition="attribute_exists(#pk)", condition_values={})
        except ClientError as exc:
            _unless_condition_failed(exc)

    def forget(self, key: dict[str, str], *, if_status: Status | None = None) -> None:
        """Delete an item (a placeholder whose files are now known); with ``if_status`` only if it
        still has that status."""
        if if_status is None:
            self._table.delete_item(Key=key)
            return
        try:
            self._table.delete_item(
                Key=key,
                ConditionExpression="#status = :status",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":status": if_status.value},
            )
        except ClientError as exc:
            _unless_condition_failed(exc)

    def erase(self, item: dict[str, Any], erasure_id: str, erased_at: str) -> None:
        """Replace an item of an erased call by its tombstone: which file it was and how it was
        reached (``via``, so reconciliation still knows the call as handled), nothing more."""
        tombstone = {
            "pk": item["pk"],
            "sk": item["sk"],
            "source_id": item.get("source_id", ""),
            "call_id": item.get("call_id", ""),
            "status": Status.ERASED.value,
            "erasure_id": erasure_id,
            "updated_at": erased_at,
        }
        if item.get("via"):
            tombstone["via"] = item["via"]
        self._table.put_item(Item=tombstone)

    def announced(self, key: dict[str, str], event: str) -> None:
        """The sidecar and event owed for this item are out (unless it was erased meanwhile)."""
        try:
            self._table.update_item(
                Key=key,
                UpdateExpression="REMOVE #announce",
                ConditionExpression="#announce = :event",
                ExpressionAttributeNames={"#announce": "announce"},
                ExpressionAttributeValues={":event": event},
            )
        except ClientError as exc:
            _unless_condition_failed(exc)

    def owed(self, event: str, updated_before: str) -> Iterator[dict[str, str]]:
        """Keys of items whose ``event`` is still owed, last changed at ``updated_before`` or earlier."""
        return self._query(
            IndexName=ANNOUNCEMENT_INDEX,
            KeyConditionExpression="announce = :event AND updated_at <= :before",
            ExpressionAttributeValues={":event": event, ":before": updated_before},
        )

    # -- reads ------------------------------------------------------------------------------

    def get(self, key: dict[str, str]) -> dict[str, Any] | None:
        item = self._table.get_item(Key=key, ConsistentRead=True).get("Item")
        return dict(item) if item else None

    def call_items(self, source_id: str, call_id: str) -> list[dict[str, Any]]:
        """Every item of one call (its files and any placeholder), read consistently."""
        return list(
            self._query(
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": call_pk(source_id, call_id)},
                ConsistentRead=True,
            )
        )

    def handled(self, jobs: list[FetchJob]) -> set[str]:
        """Identities of the jobs the ledger already knows about, in any status.

        A job naming a file is known when that file has an item. A job with a selector is
        known when its placeholder exists or a file was archived through that selector (the
        provider named the files: a ``*mono`` job's file is not a ``*multichannel`` job's).
        """
        keys = {job.identity: ledger_key(job) for job in jobs}
        known = self._existing_keys(list(keys.values()))
        handled = {identity for identity, key in keys.items() if (key["pk"], key["sk"]) in known}
        for job in jobs:
            if job.identity in handled or job.names_a_file:
                continue
            if any(item.get("via") == job.file_name for item in self.call_items(job.source_id, job.call_id)):
                handled.add(job.identity)
        return handled

    def by_status(
        self, status: Status, *, since: str | None = None, source_id: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Items with this status (never STORED), oldest update first; ``since`` an ISO time."""
        condition = "open_status = :status"
        params: dict[str, Any] = {"IndexName": STATUS_INDEX}
        values: dict[str, Any] = {":status": status.value}
        if since:
            condition += " AND updated_at >= :since"
            values[":since"] = since
        if source_id:
            params["FilterExpression"] = "source_id = :source"
            values[":source"] = source_id
        return self._query(**params, KeyConditionExpression=condition, ExpressionAttributeValues=values)

    def by_call_date(
        self, source_id: str, first_day: str, last_day: str, *, attributes: tuple[str, ...] = ()
    ) -> Iterator[dict[str, Any]]:
        """Every item of one source whose call was on a day from ``first_day`` to ``last_day``
        (only ``attributes`` of each, if given)."""
        params: dict[str, Any] = {}
        if attributes:
            params["ProjectionExpression"] = ", ".join(f"#a{i}" for i in range(len(attributes)))
            params["ExpressionAttributeNames"] = {f"#a{i}": name for i, name in enumerate(attributes)}
        return self._query(
            IndexName=CALL_DATE_INDEX,
            KeyConditionExpression="source_id = :source AND call_date BETWEEN :first AND :last",
            ExpressionAttributeValues={":source": source_id, ":first": first_day, ":last": last_day},
            **params,
        )

    def _query(self, **params: Any) -> Iterator[dict[str, Any]]:
        while True:
            reply = self._table.query(**params)
            for item in reply.get("Items", []):
                yield dict(item)
            if "LastEvaluatedKey" not in reply:
                return
            params["ExclusiveStartKey"] = reply["LastEvaluatedKey"]

    def _existing_keys(self, keys: list[dict[str, str]]) -> set[tuple[str, str]]:
        """Which of these keys have an item (BatchGetItem, consistent, unprocessed keys retried)."""
        found: set[tuple[str, str]] = set()
        unique = list({(key["pk"], key["sk"]): key for key in keys}.values())
        # The resource's own client: it converts attribute values the way the Table does.
        client = self._table.meta.client
        for start in range(0, len(unique), BATCH_GET_LIMIT):
            request: dict[str, Any] = {
                self._table.name: {
                    "Keys": unique[start : start + BATCH_GET_LIMIT],
                    "ConsistentRead": True,
                    "ProjectionExpression": "pk, sk",
                }
            }
            while request:
                reply = client.batch_get_item(RequestItems=request)
                for item in reply.get("Responses", {}).get(self._table.name, []):
                    found.add((str(item["pk"]), str(item["sk"])))
                request = reply.get("UnprocessedKeys") or {}
        return found

    # -- the one writer ---------------------------------------------------------------------

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
        words such as status, size and bucket). Setting ``status`` keeps ``open_status`` (the
        ByStatus index key) in step: the status itself, or absent once STORED."""
        set_values = dict(set_values)
        if "status" in set_values:
            if set_values["status"] == Status.STORED.value:
                remove = (*remove, "open_status")
            else:
                set_values["open_status"] = set_values["status"]
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
        params: dict[str, Any] = {
            "Key": key,
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
        }
        if values:
            params["ExpressionAttributeValues"] = values
        self._table.update_item(**params)


def _unless_condition_failed(exc: ClientError) -> None:
    if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
        raise exc


def lease_seconds_for(remaining_ms: int) -> int:
    """A lease a little longer than this invocation can live: a crashed holder frees it soon."""
    return max(60, remaining_ms // 1000 + 60)
