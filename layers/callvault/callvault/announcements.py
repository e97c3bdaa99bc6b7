"""What downstream consumers get: a ``call.json`` sidecar per call and an EventBridge event per
file (``RecordingArchived`` once stored, ``RecordingFailed`` once given up on); the JSON Schemas
are in ``schemas/``, the contract in docs/consumers.md.

Both are built from the ledger, the archive's source of truth, so the fetcher right after
storing a file, the retry workflow after giving up (the failed event) and the sweep that re-sends
what is owed all say the same. The ledger marks the debt (``announce``) in the same write that
stores the file, and clears it once the sidecar and the event are out: a crash, S3 or EventBridge
trouble in between never loses either, the sweep (the reconciler's schedule) sends it later.
Delivery is at least once: consumers deduplicate on ``event_id``.

**The sidecar** ``recordings/{source}/{yyyy}/{mm}/{dd}/{call}/call.json`` lists the call's stored
files; a copy goes to ``calls/{source}/{yyyy}/{mm}/{dd}/{call}.json`` for the Athena table.
Files of one call may be stored by concurrent deliveries, so a writer re-reads the ledger after
each write and writes again until what it wrote is what the ledger holds: whoever writes last
has read every file stored before its last read, and a file stored after that has a writer of
its own that writes later.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from callvault.call_facts import facts_of, stored_name, utc_text
from callvault.config import Settings
from callvault.errors import ConfigError, SourceNotFound
from callvault.keys import catalog_key, sidecar_key
from callvault.ledger import ARCHIVED, FAILED, RecordingLedger, Status
from callvault.models import FetchJob
from callvault.observability import logger
from callvault.participants import ParticipantPolicy
from callvault.providers.interface import Source
from callvault.retention import object_tags, tagging
from callvault.sources import SourceDirectory
from callvault.timefmt import iso, utc_now

SCHEMA_VERSION = "1"
EVENT_SOURCE = "callvault"
SIDECAR_CONTENT_TYPE = "application/json"
# A writer that keeps finding new files gives up after this many writes; the debt stays on
# record and the sweep finishes the sidecar.
MAX_SIDECAR_WRITES = 5
# The sweep leaves alone what the fetcher or the workflow is probably sending right now, and
# leaves the rest of the reconciler's run (5 minutes at most) to reconciliation.
SWEEP_GRACE = timedelta(minutes=2)
SWEEP_BUDGET_SECONDS = 120.0


class AnnouncementFailed(Exception):
    """The sidecar or the event could not be written now; the ledger still owes it."""


def event_id(kind: str, *parts: str) -> str:
    return hashlib.sha256("\n".join((kind, *parts)).encode()).hexdigest()[:32]


def failed_event_id(key: dict[str, str], attempt: int) -> str:
    """The same for the workflow's event and the sweep's re-sending of it."""
    return event_id(FAILED, key["pk"], key["sk"], str(attempt))


@dataclass(frozen=True)
class SourceView:
    """What announcing needs of a source: its zone and its participants policy (None when the
    source cannot be read: no participants then, rather than numbers under an unknown policy)."""

    timezone: Any
    policy: ParticipantPolicy | None


def view_of(source: Source | None) -> SourceView:
    return SourceView(source.timezone, source.participants) if source else SourceView(None, None)


def _job_of(item: dict[str, Any]) -> FetchJob | None:
    try:
        return FetchJob.from_json(str(item.get("job", "")))
    except ConfigError:
        return None


def call_document(job: FetchJob, view: SourceView) -> dict[str, Any]:
    return facts_of(job, view.timezone).to_dict(view.policy)


def archived_detail(item: dict[str, Any], job: FetchJob, view: SourceView) -> dict[str, Any]:
    version_id = str(item.get("version_id") or "")
    return {
        "version": SCHEMA_VERSION,
        "event_id": event_id(ARCHIVED, str(item["bucket"]), str(item["s3_key"]), version_id or str(item["sha256"])),
        "source_id": job.source_id,
        "provider": job.provider,
        "call_id": job.call_id,
        "file_name": stored_file_name(item),
        "bucket": str(item["bucket"]),
        "key": str(item["s3_key"]),
        "version_id": version_id or None,
        "size": int(item["size"]),
        "sha256": str(item["sha256"]),
        "content_type": str(item.get("content_type") or "application/octet-stream"),
        "call": call_document(job, view),
        "attempts": int(item.get("attempts", 1)),
        "origin": job.origin,
        "archived_at": _utc(str(item.get("stored_at") or "")),
    }


def failed_detail(
    key: dict[str, str], job: FetchJob, view: SourceView, *, attempt: int, reason: str, error: str, failed_at: str
) -> dict[str, Any]:
    return {
        "version": SCHEMA_VERSION,
        "event_id": failed_event_id(key, attempt),
        "source_id": job.source_id,
        "provider": job.provider,
        "call_id": job.call_id,
        "file_name": stored_name(job, key["sk"].removeprefix("FILE#"), view.policy),
        "call": call_document(job, view),
        "attempts": attempt,
        "origin": job.origin,
        "reason": reason,
        "error": error,
        "failed_at": _utc(failed_at),
    }


def sidecar_document(job: FetchJob, view: SourceView, stored: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": SCHEMA_VERSION,
        "source_id": job.source_id,
        "provider": job.provider,
        "call_id": job.call_id,
        "call": call_document(job, view),
        "files": [
            {
                "file_name": stored_file_name(item),
                "key": str(item["s3_key"]),
                "version_id": str(item.get("version_id") or "") or None,
                "size": int(item["size"]),
                "sha256": str(item["sha256"]),
                "content_type": str(item.get("content_type") or "application/octet-stream"),
                "archived_at": _utc(str(item.get("stored_at") or "")),
            }
            for item in sorted(stored, key=lambda item: str(item["sk"]))
        ],
    }


def stored_file_name(item: dict[str, Any]) -> str:
    """The name a stored file has in the bucket (the last part of its key): the provider's, with
    participant numbers masked under the source's policy (``call_facts.stored_name``)."""
    return str(item["s3_key"]).rsplit("/", 1)[-1]


def _utc(text: str) -> str:
    try:
        return utc_text(datetime.fromisoformat(text))
    except ValueError:
        return utc_text(utc_now())


class Announcer:
    """Writes sidecars and sends events for ledger items, and clears the debt once both are out."""

    def __init__(
        self,
        *,
        ledger: RecordingLedger,
        s3: Any,
        open_events: Callable[[], Any],
        bucket: str,
        event_bus: str,
        source_of: Callable[[str], Source | None],
        tags: Callable[[Source | None], str] = lambda _: "",
    ) -> None:
        self._ledger = ledger
        self._s3 = s3
        self._open_events = open_events
        self._events: Any = None
        self._bucket = bucket
        self._bus = event_bus
        self._source_of = source_of
        self._tags = tags

    def archived(self, source_id: str, call_id: str, sk: str) -> None:
        """Sidecar and ``RecordingArchived`` for one stored file; ``AnnouncementFailed`` leaves it owed."""
        source = self._source_of(source_id)
        view = view_of(source)
        items = self._ledger.call_items(source_id, call_id)
        item = next((i for i in items if i.get("sk") == sk), None)
        if item is None or item.get("status") != Status.STORED.value or item.get("announce") != ARCHIVED:
            return  # erased, or already announced by someone else
        job = _job_of(item)
        if job is None:
            logger.error("ledger item has no readable job; nothing to announce", extra={"pk": item["pk"], "sk": sk})
            self._ledger.announced({"pk": item["pk"], "sk": sk}, ARCHIVED)
            return
        if not self._write_sidecar(job, view, items, source, sk):
            return  # erased while the sidecar was written: no event for a deleted recording
        self._put_event(ARCHIVED, archived_detail(item, job, view))
        self._ledger.announced({"pk": item["pk"], "sk": sk}, ARCHIVED)

    def failed(self, key: dict[str, str]) -> None:
        """``RecordingFailed`` for an item the retry workflow gave up on (the sweep's resend)."""
        item = self._ledger.get(key)
        if item is None or item.get("announce") != FAILED:
            return
        if item.get("status") != Status.FAILED.value:
            # Retried (by an operator) or archived meanwhile: the failure is no news any more.
            self._ledger.announced(key, FAILED)
            return
        job = _job_of(item)
        if job is not None:
            detail = failed_detail(
                key,
                job,
                view_of(self._source_of(job.source_id)),
                attempt=int(item.get("attempt", item.get("job_attempt", 1))),
                reason=str(item.get("alert_reason") or item.get("reason") or ""),
                error=str(item.get("error") or "PermanentFailure"),
                failed_at=str(item.get("failed_at") or item.get("updated_at") or ""),
            )
            self._put_event(FAILED, detail)
        self._ledger.announced(key, FAILED)

    def sweep(
        self, older_than: timedelta = SWEEP_GRACE, budget_seconds: float = SWEEP_BUDGET_SECONDS
    ) -> dict[str, int]:
        """Send what is still owed and was last changed ``older_than`` ago (called on the
        reconciler's schedule), for at most ``budget_seconds`` (an outage must not make the run
        time out: the next run goes on); counts per event."""
        before = iso(utc_now() - older_than)
        stop_at = time.monotonic() + budget_seconds
        sent = {ARCHIVED: 0, FAILED: 0, "still_owed": 0}
        for kind in (ARCHIVED, FAILED):
            for key in list(self._ledger.owed(kind, before)):
                if time.monotonic() > stop_at:
                    sent["still_owed"] += 1
                    continue
                try:
                    if kind == ARCHIVED:
                        source_id, call_id = _call_of(key)
                        self.archived(source_id, call_id, key["sk"])
                    else:
                        self.failed({"pk": key["pk"], "sk": key["sk"]})
                    sent[kind] += 1
                except AnnouncementFailed as exc:
                    sent["still_owed"] += 1
                    logger.warning("announcement still owed", extra={"pk": key["pk"], "reason": str(exc)})
                except Exception:
                    # One item that cannot be announced (a bug, a malformed item) must not keep the
                    # sweep from the others, run after run: it stays owed and is logged as an error.
                    sent["still_owed"] += 1
                    logger.exception("announcement failed", extra={"pk": key["pk"], "sk": key["sk"]})
        return sent

    def _write_sidecar(
        self, job: FetchJob, view: SourceView, items: list[dict[str, Any]], source: Source | None, sk: str
    ) -> bool:
        """Write the call's sidecar (and its catalogue copy) until what was written is what the
        ledger holds; False if the file being announced is no longer stored (erased meanwhile)."""
        keys = (
            sidecar_key(job.source_id, job.call_time, job.call_id),
            catalog_key(job.source_id, job.call_time, job.call_id),
        )
        written: list[tuple[str, str]] | None = None
        versions: list[tuple[str, str]] = []
        for _ in range(MAX_SIDECAR_WRITES + 1):
            stored = [i for i in items if i.get("status") == Status.STORED.value]
            present = sorted((str(i["sk"]), str(i.get("version_id") or i.get("sha256"))) for i in stored)
            if not any(i["sk"] == sk for i in stored):
                # The call was erased while this ran (callvault erase lists the folder again after
                # its tombstones; this writer may come after that): take back what it wrote.
                self._delete_versions(versions)
                return False
            if present == written:
                return True
            if len(versions) >= MAX_SIDECAR_WRITES * len(keys):
                break
            # One line: the Athena table reads one JSON object per line.
            document = sidecar_document(job, view, stored)
            body = (json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
            versions += [(key, self._put_object(key, body, source)) for key in keys]
            written = present
            items = self._ledger.call_items(job.source_id, job.call_id)
        raise AnnouncementFailed("the call's files kept changing while its sidecar was written")

    def _delete_versions(self, versions: list[tuple[str, str]]) -> None:
        for key, version in versions:
            try:
                self._s3.delete_object(Bucket=self._bucket, Key=key, **({"VersionId": version} if version else {}))
            except Exception:
                logger.exception("could not take back a sidecar written during an erasure", extra={"key": key})

    def _put_object(self, key: str, body: bytes, source: Source | None) -> str:
        """Store ``body`` at ``key``; its version id ("" in a bucket without versioning)."""
        params: dict[str, Any] = {}
        tags = self._tags(source)
        if tags:
            params["Tagging"] = tags
        try:
            reply = self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentType=SIDECAR_CONTENT_TYPE,
                ChecksumAlgorithm="SHA256",
                **params,
            )
        except Exception as exc:  # S3 trouble of any kind: the debt stays on record
            raise AnnouncementFailed(f"S3 could not store {key}: {exc}") from exc
        return str(reply.get("VersionId") or "")

    def _put_event(self, kind: str, detail: dict[str, Any]) -> None:
        try:
            if self._events is None:
                self._events = self._open_events()
            reply = self._events.put_events(
                Entries=[
                    {
                        "Source": EVENT_SOURCE,
                        "DetailType": kind,
                        "Detail": json.dumps(detail, ensure_ascii=False),
                        "EventBusName": self._bus,
                    }
                ]
            )
        except Exception as exc:
            raise AnnouncementFailed(f"EventBridge did not take the {kind} event: {exc}") from exc
        if reply.get("FailedEntryCount"):
            entry = (reply.get("Entries") or [{}])[0]
            raise AnnouncementFailed(
                f"EventBridge refused the {kind} event: {entry.get('ErrorCode')} {entry.get('ErrorMessage')}"
            )


def _call_of(key: dict[str, str]) -> tuple[str, str]:
    """``CALL#{source}#{call}``: source ids hold no ``#``; call ids may."""
    _, source_id, call_id = key["pk"].split("#", 2)
    return source_id, call_id


def sources_lookup(get: Callable[[str], Source]) -> Callable[[str], Source | None]:
    """A source by id, or None when it cannot be read (announcing goes on without participants)."""

    def lookup(source_id: str) -> Source | None:
        try:
            return get(source_id)
        except (SourceNotFound, ConfigError):
            return None

    return lookup


def announcer(config: Settings, ledger: RecordingLedger, s3: Any, sources: SourceDirectory) -> Announcer:
    """The stack's announcer, as the fetcher and the reconciler's sweep make it. The EventBridge
    client is made at the first event (a cold start pays for no client it may not need)."""
    import boto3  # the functions' own SDK; imported here so that tests of the documents need none

    return Announcer(
        ledger=ledger,
        s3=s3,
        open_events=lambda: boto3.client("events"),
        bucket=config.recordings_bucket,
        event_bus=config.event_bus_name,
        source_of=sources_lookup(sources.get),
        tags=lambda source: tagging(object_tags(source.retention_class if source else None)),
    )
