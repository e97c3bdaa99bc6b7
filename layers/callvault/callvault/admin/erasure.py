"""Erasing one call on request (``callvault erase``): every version of its objects, its ledger
items, and an audit record of who erased what, when and why.

- **What belongs to the call**: the objects under the folder of each S3 key its ledger items
  name (``recordings/{source}/{yyyy}/{mm}/{dd}/{call}/``: its recordings, its ``call.json``
  sidecar and whatever else is kept beside them, a transcript say), and the sidecar's copy in
  the call catalogue (``calls/…/{call}.json``), every version and delete marker of each.
- **Refused, with the reason, before anything is deleted**, while any version is under a legal
  hold or under COMPLIANCE retention (S3 would refuse too, half-way); GOVERNANCE retention is
  refused unless the operator bypasses it (``--bypass-governance``, which needs
  ``s3:BypassGovernanceRetention``).
- **The audit record** (ledger table, ``ERASURE#{source}#{call}`` / ``AT#{time}``, never expires)
  is written before the first delete with what is about to go (keys, version ids, sizes, the
  ledger's sha256 of each file), and marked ``erased`` when all is gone. An erasure that breaks
  off leaves it ``erasing``; running the command again finishes the job and records that too.
- **Ledger items become tombstones** (status ERASED: which file, nothing of the job or its
  participants), so a late report or a reconciliation run never archives the call again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from callvault.keys import SIDECAR_NAME, catalog_key_of_folder
from callvault.ledger import RecordingLedger, Status
from callvault.timefmt import iso, utc_now

DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys


class ErasureRefused(Exception):
    """The call cannot be erased now; the message says which object holds it and why."""


@dataclass(frozen=True)
class ObjectVersion:
    key: str
    version_id: str
    delete_marker: bool
    size: int


@dataclass
class ErasurePlan:
    source_id: str
    call_id: str
    files: list[dict[str, Any]] = field(default_factory=list)  # the ledger's view: name, key, sha256, size
    versions: list[ObjectVersion] = field(default_factory=list)
    ledger_items: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)  # recordings/{source}/{yyyy}/{mm}/{dd}/{call}/

    @property
    def known(self) -> bool:
        return bool(self.ledger_items)


def plan_erasure(
    s3: Any, bucket: str, ledger: RecordingLedger, source_id: str, call_id: str, *, bypass_governance: bool = False
) -> ErasurePlan:
    """What erasing the call would delete, and what (if anything) forbids it now."""
    plan = ErasurePlan(source_id, call_id)
    plan.ledger_items = [item for item in ledger.call_items(source_id, call_id) if item.get("status") != Status.ERASED]
    folders: set[str] = set()
    for item in plan.ledger_items:
        key = str(item.get("s3_key") or "")
        if key:
            folders.add(key.rsplit("/", 1)[0] + "/")
        if item.get("status") == Status.STORED:
            plan.files.append(
                {
                    "file_name": item.get("file_name") or str(item["sk"]).removeprefix("FILE#"),
                    "s3_key": key,
                    "size": int(item.get("size", 0)),
                    "sha256": item.get("sha256", ""),
                    "version_id": item.get("version_id", ""),
                }
            )
    now = utc_now()
    for folder in sorted(folders):
        catalog_copy = catalog_key_of_folder(folder)
        # The catalogue key is a prefix of other calls' keys too ("c1.json" of "c1.json2.json").
        found = [
            *_versions(s3, bucket, folder),
            *(v for v in _versions(s3, bucket, catalog_copy) if v.key == catalog_copy),
        ]
        for version in found:
            plan.versions.append(version)
            if not version.delete_marker:
                refusal = _lock_of(s3, bucket, version, now, bypass_governance)
                if refusal:
                    plan.refusals.append(refusal)
    return plan


def erase(
    s3: Any, bucket: str, table: Any, plan: ErasurePlan, *, reason: str, erased_by: str, bypass_governance: bool = False
) -> dict[str, Any]:
    """Carry out a plan without refusals; the audit record, as written at the end."""
    if plan.refusals:
        raise ErasureRefused("; ".join(plan.refusals))
    if not reason.strip():
        raise ValueError("an erasure needs a reason")
    started = iso(utc_now())
    erasure_id = uuid.uuid4().hex
    record: dict[str, Any] = {
        "pk": f"ERASURE#{plan.source_id}#{plan.call_id}",
        "sk": f"AT#{started}#{erasure_id[:8]}",
        "erasure_id": erasure_id,
        "source_id": plan.source_id,
        "call_id": plan.call_id,
        "reason": reason.strip(),
        "erased_by": erased_by,
        "started_at": started,
        "status": "erasing",
        "files": plan.files,
        "versions": [vars(version) for version in plan.versions],
        "ledger_items": [str(item["sk"]) for item in plan.ledger_items],
    }
    table.put_item(Item=record)  # first: whatever happens next, the attempt is on record

    _delete(s3, bucket, plan.versions, record, bypass_governance)

    ledger = RecordingLedger(table)
    erased_at = iso(utc_now())
    for item in plan.ledger_items:
        ledger.erase(item, erasure_id, erased_at)
    # A sidecar may have been written between the plan and the tombstones (an owed announcement
    # sent meanwhile): the sidecars there now go too. A writer that comes after the tombstones
    # finds them and takes its own sidecar back (callvault.announcements).
    late = [
        v
        for folder in plan.folders
        for v in _call_objects(s3, bucket, folder)
        if v.key in (folder + SIDECAR_NAME, catalog_key_of_folder(folder))
    ]
    _delete(s3, bucket, late, record, bypass_governance)
    versions = [*record["versions"], *(vars(version) for version in late)]
    table.update_item(
        Key={"pk": record["pk"], "sk": record["sk"]},
        UpdateExpression="SET #status = :erased, erased_at = :at, versions = :versions",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":erased": "erased", ":at": erased_at, ":versions": versions},
    )
    return {**record, "versions": versions, "status": "erased", "erased_at": erased_at}


def _delete(s3: Any, bucket: str, versions: list[ObjectVersion], record: dict[str, Any], bypass: bool) -> None:
    for batch in _batches(versions, DELETE_BATCH):
        params: dict[str, Any] = {
            "Bucket": bucket,
            "Delete": {"Objects": [{"Key": v.key, "VersionId": v.version_id} for v in batch], "Quiet": True},
        }
        if bypass:
            params["BypassGovernanceRetention"] = True
        errors = s3.delete_objects(**params).get("Errors") or []
        if errors:
            first = errors[0]
            raise ErasureRefused(
                f"S3 refused to delete {len(errors)} version(s), e.g. {first.get('Key')} "
                f"({first.get('Code')}: {first.get('Message')}); the audit record {record['sk']} says what was planned"
            )


def _call_objects(s3: Any, bucket: str, folder: str) -> list[ObjectVersion]:
    """Every version under a call's folder, and of its catalogue copy."""
    catalog_copy = catalog_key_of_folder(folder)
    # The catalogue key is a prefix of other calls' keys too ("c1.json" of "c1.json2.json").
    return [*_versions(s3, bucket, folder), *(v for v in _versions(s3, bucket, catalog_copy) if v.key == catalog_copy)]


def erasures(table: Any, source_id: str, call_id: str) -> list[dict[str, Any]]:
    """The audit records of a call's erasures, oldest first."""
    reply = table.query(
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": f"ERASURE#{source_id}#{call_id}"},
        ConsistentRead=True,
    )
    return list(reply.get("Items", []))


def _versions(s3: Any, bucket: str, folder: str) -> Iterator[ObjectVersion]:
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=folder):
        for version in page.get("Versions", []):
            yield ObjectVersion(version["Key"], version["VersionId"], False, int(version.get("Size", 0)))
        for marker in page.get("DeleteMarkers", []):
            yield ObjectVersion(marker["Key"], marker["VersionId"], True, 0)


def _lock_of(s3: Any, bucket: str, version: ObjectVersion, now: datetime, bypass_governance: bool) -> str | None:
    """Why this version cannot be deleted now (None: it can)."""
    head = s3.head_object(Bucket=bucket, Key=version.key, VersionId=version.version_id)
    where = f"{version.key} (version {version.version_id})"
    if head.get("ObjectLockLegalHoldStatus") == "ON":
        return f"{where} is under a legal hold"
    until = head.get("ObjectLockRetainUntilDate")
    if until is None or until <= now:
        return None
    mode = head.get("ObjectLockMode")
    if mode == "COMPLIANCE":
        return f"{where} is under COMPLIANCE retention until {until.isoformat()}: no one can delete it before then"
    if mode == "GOVERNANCE" and not bypass_governance:
        return f"{where} is under GOVERNANCE retention until {until.isoformat()} (--bypass-governance overrides it)"
    return None


def _batches(items: list[ObjectVersion], size: int) -> Iterator[list[ObjectVersion]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
