"""One fetch attempt of one job: claim, resolve at the last moment, stream into S3, record.

Every way an attempt can end is decided here:
- a job that only leaves a note: the call is EXPECTED (its recording announcement is still
  due) or has NO_RECORDING;
- stored (ledger STORED with size and sha256), or skipped because it already was;
- skipped because another delivery of the same job holds the lease right now;
- a ``FetchError``: the ledger notes the reason and the retry workflow takes the job over
  (wait and re-enqueue, or mark FAILED and notify), and the queue message is done;
- anything else (a bug, AWS unreachable) propagates, so SQS redelivers the message and, after
  the redrive limit, parks it in the DLQ behind an alarm. (S3 refusing the upload is a
  ``FetchError`` like a provider's trouble: the retry workflow, with the reason.)

A download that breaks mid-way is resumed within the attempt (``callvault.streaming``); when the
link it came from has expired by then, a fresh one is resolved through the provider.

Each stored file, retry and give-up is also a metric (callvault.observability).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from callvault.announcements import AnnouncementFailed, Announcer, failed_detail, view_of
from callvault.call_facts import call_ended_at, call_started_at, loggable, stored_name
from callvault.config import RetrySettings, TransferSettings
from callvault.errors import ConfigError, FetchError, PermanentFailure, RetryKind, RetryLater, SourceNotFound
from callvault.fetch_slots import MAX_DEFERRAL_SECONDS, FetchSlots, Slot, deferral_delay
from callvault.jobs import RetryWorkflow
from callvault.keys import content_type_for, recording_key
from callvault.ledger import Claim, ClaimOutcome, RecordingLedger, Status, ledger_key
from callvault.models import FetchJob, StoredObject
from callvault.observability import (
    logger,
    record_archived,
    record_deferral,
    record_failure,
    record_fetch_started,
    record_retry,
    without_phone_numbers,
)
from callvault.providers.interface import DownloadStream, PendingDownload, ProviderRuntime, Source
from callvault.retention import object_tags
from callvault.retry_policy import plan_retry
from callvault.sources import SourceDirectory
from callvault.streaming import store_download
from callvault.timefmt import iso, utc_now


@dataclass
class FetchReport:
    """What one attempt did, for logs and tests."""

    stored: list[StoredObject] = field(default_factory=list)
    already_stored: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)  # files erased on request: never archived again
    handed_over: str | None = None  # the reason, when the retry workflow took the job
    noted: str | None = None  # the status noted, for a job that fetches nothing
    deferred: int | None = None  # seconds until the job comes back: its source's slots were all taken


class Fetcher:
    def __init__(
        self,
        *,
        sources: SourceDirectory,
        ledger: RecordingLedger,
        s3: Any,
        bucket: str,
        runtime: ProviderRuntime,
        workflow: RetryWorkflow,
        retry: RetrySettings,
        transfer: TransferSettings | None = None,
        time_left: Callable[[], float] = lambda: math.inf,
        announcer: Announcer | None = None,
        slots: FetchSlots | None = None,
        requeue: Callable[[FetchJob, int], None] | None = None,
        deferral_max_seconds: int = MAX_DEFERRAL_SECONDS,
    ) -> None:
        """``time_left``: seconds the current invocation has left (a resume needs some);
        ``announcer``: sidecars and events for consumers (None: left owed in the ledger);
        ``slots`` and ``requeue(job, delay_seconds)``: each source's concurrency limit, and how a
        job that finds its source's slots taken goes back to the queue (None: no limit)."""
        self._sources = sources
        self._ledger = ledger
        self._s3 = s3
        self._bucket = bucket
        self._runtime = runtime
        self._workflow = workflow
        self._retry = retry
        self._transfer = transfer or TransferSettings()
        self._time_left = time_left
        self._announcer = announcer
        self._slots = slots
        self._requeue = requeue
        self._deferral_max_seconds = deferral_max_seconds

    def process(self, job: FetchJob, lease_seconds: int, delivery_id: str) -> FetchReport:
        """One attempt. ``delivery_id`` names this delivery (the SQS message id): a redelivered
        message hands over to the retry workflow at most once."""
        report = FetchReport()
        if job.no_recording:
            self._ledger.note_no_recording(job, job.no_recording)
            report.noted = Status.NO_RECORDING.value
            return report
        if job.not_before:
            self._ledger.expect(job, job.not_before)
            report.noted = Status.EXPECTED.value
            return report
        failed_key = ledger_key(job)
        lease_id: str | None = None
        slot: Slot | None = None
        try:
            source = self._source_of(job)
            if self._slots is not None:
                slot = self._slots.acquire(
                    source.id, source.max_concurrent_fetches, f"{delivery_id}/{uuid.uuid4().hex}", lease_seconds
                )
                if slot is None:
                    report.deferred = self._defer(source, job)
                    return report
                self._started(source, job, slot)
            claimed_up_front: Claim | None = None
            if job.names_a_file:
                # The file is known up front: a stored or busy one costs no provider call.
                claimed_up_front = self._claim(source, job, job.file_name, lease_seconds, report)
                if claimed_up_front is None:
                    return report
                lease_id = claimed_up_front.lease_id
            downloads = self._resolve(source, job)
            if not job.names_a_file:
                # The call's files are known now and get their own items; an earlier failed
                # resolution left a placeholder that would otherwise look pending for ever.
                self._ledger.forget(ledger_key(job))
            for download in downloads:
                failed_key = ledger_key(job, download.file_name)
                if claimed_up_front and claimed_up_front.key == failed_key:
                    claim: Claim | None = claimed_up_front
                else:
                    lease_id = None
                    claim = self._claim(source, job, download.file_name, lease_seconds, report)
                if claim is None:
                    continue
                lease_id = claim.lease_id
                report.stored.append(self._store(source, job, download, claim))
                lease_id = None
        except FetchError as error:
            self._hand_over(job, error, failed_key, lease_id, delivery_id)
            report.handed_over = error.reason
        except BaseException:
            if lease_id:  # let the redelivered message claim the file again at once
                self._ledger.release(job, failed_key, Status.RETRY_SCHEDULED, "fetcher error, SQS redelivers", lease_id)
            raise
        finally:
            if slot is not None:
                self._release(slot)
        return report

    def _release(self, slot: Slot) -> None:
        """Free the slot; if DynamoDB will not, its lease frees it (the attempt's outcome stands)."""
        assert self._slots is not None
        try:
            self._slots.release(slot)
        except Exception:
            logger.warning("fetch slot not released; its lease frees it", extra={"slot": slot.sk}, exc_info=True)

    def _defer(self, source: Source, job: FetchJob) -> int:
        """Send the job back to the queue for later: its source's slots are all taken. The same
        attempt, so waiting for a slot never eats into the retry budget. The job goes back last:
        should anything before fail, the message is redelivered and nothing was sent twice."""
        assert self._slots is not None and self._requeue is not None
        now = utc_now()
        deferred = job.defer(iso(now))
        delay = deferral_delay(job.deferrals, self._deferral_max_seconds)
        since = str(deferred.waiting_since)
        self._slots.note_waiting(source.id, job.identity, since, now + timedelta(seconds=delay + 300))
        self._requeue(deferred, delay)
        logger.info(
            "source at its fetch limit; job deferred",
            extra={"job": loggable(job), "limit": source.max_concurrent_fetches, "back_in_seconds": delay},
        )
        waited = (now - datetime.fromisoformat(since)).total_seconds()
        record_deferral(
            provider=job.provider, source_id=source.id, waited_seconds=waited, in_flight=source.max_concurrent_fetches
        )
        return delay

    def _started(self, source: Source, job: FetchJob, slot: Slot) -> None:
        """A fetch holds one of its source's slots now: it waits no more, and how busy the source
        is goes to the metrics (as taking the slot saw it: no read more). Neither may cost the
        fetch anything."""
        assert self._slots is not None
        try:
            if job.deferrals:
                self._slots.done_waiting(source.id, job.identity)
            record_fetch_started(provider=job.provider, source_id=source.id, in_flight=slot.in_flight)
        except Exception:
            logger.warning("fetch slot bookkeeping failed", extra={"job": loggable(job)}, exc_info=True)

    def _source_of(self, job: FetchJob) -> Source:
        try:
            source = self._sources.get(job.source_id)
        except SourceNotFound:
            raise PermanentFailure(f"source {job.source_id!r} is not registered (any more)") from None
        except ConfigError as exc:
            raise PermanentFailure(f"source {job.source_id!r} is misconfigured: {exc}") from None
        if source.provider.name != job.provider:
            raise PermanentFailure(f"job is for provider {job.provider!r} but source is {source.provider.name!r}")
        return source

    def _resolve(self, source: Source, job: FetchJob) -> list[PendingDownload]:
        if job.give_up_at and utc_now() > datetime.fromisoformat(job.give_up_at):
            raise PermanentFailure(f"the provider keeps recordings only until {job.give_up_at}: too late to fetch")
        downloads = source.provider.resolve(source, job, self._runtime)
        if not downloads:
            raise PermanentFailure("provider lists no recording files for this call")
        return downloads

    def _claim(
        self, source: Source, job: FetchJob, file_name: str, lease_seconds: int, report: FetchReport
    ) -> Claim | None:
        key = recording_key(job.source_id, job.call_time, job.call_id, stored_name(job, file_name, source.participants))
        claim = self._ledger.claim(job, file_name, key, lease_seconds)
        if claim.outcome is ClaimOutcome.ALREADY_STORED:
            report.already_stored.append(key)
            logger.info("recording already archived", extra={"job": loggable(job)})
            return None
        if claim.outcome is ClaimOutcome.ERASED:
            report.erased.append(key)
            logger.info("recording was erased on request; not archived again", extra={"job": loggable(job)})
            return None
        if claim.outcome is ClaimOutcome.IN_PROGRESS:
            # Another delivery holds the lease; its message stays on the queue until it is done.
            report.in_progress.append(key)
            logger.info("recording being archived by another delivery", extra={"job": loggable(job)})
            return None
        return claim

    def _store(self, source: Source, job: FetchJob, download: PendingDownload, claim: Claim) -> StoredObject:
        key = claim.s3_key
        links = _FreshLinks(download, lambda: self._resolve_again(source, job, download.file_name))
        stored = store_download(
            self._s3,
            bucket=self._bucket,
            key=key,
            open_at=links.open,
            content_type=lambda declared: content_type_for(download.file_name, declared),
            metadata={
                "source-id": job.source_id,
                "provider": job.provider,
                "call-id": job.call_id,
                "call-time": job.call_time,
            },
            settings=self._transfer,
            time_left=self._time_left,
            tags=object_tags(source.retention_class),
        )
        if self._ledger.mark_stored(claim, stored):
            self._announce(job, claim)
        else:
            logger.warning("lease lost while storing; another delivery owns the record", extra={"key": key})
        logger.info(
            "recording archived",
            extra={"job": loggable(job), "key": key, "size": stored.size, "sha256": stored.sha256},
        )
        record_archived(
            provider=job.provider,
            source_id=job.source_id,
            size=stored.size,
            delay_seconds=(utc_now() - (call_ended_at(job) or call_started_at(job))).total_seconds(),
        )
        return stored

    def _announce(self, job: FetchJob, claim: Claim) -> None:
        """Sidecar and event for a stored file; trouble leaves them owed (the ledger says so and
        the sweep sends them), never costs the archived recording its success."""
        if self._announcer is None:
            return
        try:
            self._announcer.archived(job.source_id, job.call_id, claim.key["sk"])
        except AnnouncementFailed as exc:
            logger.warning("sidecar or event owed; the sweep sends it", extra={"job": loggable(job), "why": str(exc)})
        except Exception:
            # A fault in announcing is not the recording's: it is stored and recorded, the debt
            # stays in the ledger for the sweep, and the error is logged.
            logger.exception("announcing the stored file failed; it stays owed", extra={"job": loggable(job)})

    def _resolve_again(self, source: Source, job: FetchJob, file_name: str) -> PendingDownload:
        """A fresh link to one file of the job, for a resume whose old link has expired."""
        for download in self._resolve(source, job):
            if download.file_name == file_name:
                return download
        raise RetryLater(RetryKind.LINK_EXPIRED, f"the provider no longer lists {file_name!r} for a fresh link")

    def _hand_over(
        self, job: FetchJob, error: FetchError, key: dict[str, str], lease_id: str | None, delivery_id: str
    ) -> None:
        plan = plan_retry(job, error, self._retry, utc_now())
        if plan.no_recording:
            # Nothing said this call was recorded and the provider still has no recording:
            # an outcome, not a failure (no workflow, no alert).
            self._ledger.release(job, key, Status.NO_RECORDING, plan.reason, lease_id)
            logger.info(
                "call has no recording", extra={"job": loggable(job), "reason": without_phone_numbers(plan.reason)}
            )
            return
        # Start the workflow before touching the ledger: if starting fails, the message is
        # redelivered and nothing was recorded as scheduled that is not.
        self._workflow.hand_over(job, plan, key, delivery_id, self._failed_event(job, key))
        status = Status.FAILED if plan.give_up else Status.RETRY_SCHEDULED
        self._ledger.release(job, key, status, plan.reason, lease_id)
        record = record_failure if plan.give_up else record_retry
        record(provider=job.provider, source_id=job.source_id, error=plan.error)
        logger.warning(
            "fetch attempt failed",
            extra={
                "job": loggable(job),
                "attempt": job.attempt,
                "reason": without_phone_numbers(plan.reason),
                "give_up": plan.give_up,
                "retry_in_seconds": plan.wait_seconds,
            },
        )

    def _failed_event(self, job: FetchJob, key: dict[str, str]) -> dict[str, Any]:
        """What the workflow's ``RecordingFailed`` event says of the call, should it give up:
        built here, where the source's participants policy is known; the workflow adds why."""
        try:
            source: Source | None = self._sources.get(job.source_id)
        except (SourceNotFound, ConfigError):
            source = None
        detail = failed_detail(key, job, view_of(source), attempt=job.attempt, reason="", error="", failed_at="")
        return {name: detail[name] for name in ("version", "event_id", "file_name", "call")}


class _FreshLinks:
    """Opens one file from an offset; when a resume finds its link refused as expired, the file
    is resolved again through the provider (a new signed URL) and the fresh link opened instead.
    The first open keeps today's rule: an expired link there ends the attempt as a retry."""

    def __init__(self, download: PendingDownload, resolve_again: Callable[[], PendingDownload]) -> None:
        self._download = download
        self._resolve_again = resolve_again

    @contextmanager
    def open(self, offset: int) -> Iterator[DownloadStream]:
        with ExitStack() as opened:
            try:
                stream = opened.enter_context(self._download.open(offset))
            except RetryLater as refused:
                if offset == 0 or refused.kind is not RetryKind.LINK_EXPIRED:
                    raise
                logger.info("download link expired during the transfer; resolving a fresh one")
                self._download = self._resolve_again()
                stream = opened.enter_context(self._download.open(offset))
            yield stream
