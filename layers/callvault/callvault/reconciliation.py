"""Reconciliation: archive the recordings whose push was lost, per source, on a schedule.

Pushes get lost in normal operation (a PBX pushes only while its API session lives, Dyplsapi
drops a batch after three re-sends, a CCC 2017 forwarder lives in an agent's browser tab), so
every source is compared with the provider's own record of its calls:

- a provider that lists its calls (``CallLister``: PBX CDR CSV, CCC ListCallDetailRecords) is
  read for the window from the last checkpoint (minus ``overlap``) to ``wait_for_push`` ago;
  every recording the ledger lacks is enqueued exactly as its push would have enqueued it, and
  the checkpoint advances only once those jobs are on the queue;
- Dyplsapi has no list: a call-ended report left an EXPECTED item, and one whose recording
  receipt has not come by its due time is fetched anyway.

Overlapping windows, a late push and two reconcilers at once are harmless: the ledger knows
what it has (``RecordingLedger.handled``), an enqueued file is noted QUEUED, and the fetcher's
claim guarantees one download and one object per file whatever is enqueued twice (a call whose
files only the provider can name may be resolved twice, never downloaded twice).

Each run is recorded in the ledger table (``SOURCE#{id}`` / ``RUN#…``, kept 90 days) with
what it found, enqueued and how many pushes were lost, and as metrics per source.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from callvault.call_facts import loggable
from callvault.errors import ConfigError, FetchError
from callvault.jobs import JobQueue
from callvault.keys import safe_part
from callvault.ledger import RecordingLedger, Status
from callvault.models import ORIGIN_RECONCILIATION, FetchJob, InvalidJob
from callvault.observability import logger, publish_metrics
from callvault.providers.interface import (
    CallListing,
    ProviderRuntime,
    ReconcileSettings,
    Source,
    TimeWindow,
    call_lister,
)
from callvault.timefmt import iso, utc_now

RUN_RECORD_DAYS = 90
STATE_SK = "STATE#reconcile"
QUEUED_REASON = "enqueued by reconciliation: the provider lists this recording but no push announced it"
EXPECTED_REASON = "enqueued by reconciliation: no recording receipt came for this answered call"
MAX_PROBLEMS = 20
MAX_SCHEDULED_ADVANCE = timedelta(days=1)
MAX_PROBLEM_CHARS = 300
# Windows and backfills must fall in these years: a typo must not reach the providers.
PLAUSIBLE_YEARS = range(2000, 2101)


class ReconcileRefused(ConfigError):
    """A reconciliation request that cannot be carried out as asked (e.g. a backfill of a
    source whose provider has no list of calls)."""


@dataclass
class RunReport:
    """What one reconciliation run of one source did."""

    source_id: str
    mode: str  # "scheduled" or "backfill"
    started_at: str
    window_start: str | None = None
    window_end: str | None = None
    status: str = "ok"  # ok, failed, or idle (nothing to read yet)
    calls: int = 0  # calls the provider listed (Dypls: expectations due)
    found: int = 0  # recordings among them
    lost_pushes: int = 0  # recordings the ledger lacked: their push never came
    enqueued: int = 0
    deferred: int = 0  # calls too recent to judge; a later run reads them again
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    audit_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ReconcileState:
    """Per source: the checkpoint (end of the last window read), the planner's last slot and
    the last run, in one ledger-table item; plus one item per run."""

    def __init__(self, table: Any) -> None:
        self._table = table

    @staticmethod
    def _key(source_id: str, sk: str = STATE_SK) -> dict[str, str]:
        return {"pk": f"SOURCE#{source_id}", "sk": sk}

    def get(self, source_id: str) -> dict[str, Any]:
        item = self._table.get_item(Key=self._key(source_id), ConsistentRead=True).get("Item")
        return dict(item or {})

    def claim_slot(self, source_id: str, now: datetime, interval: timedelta) -> bool:
        """True for the one planner that may start this source's run now (atomic)."""
        epoch = int(now.timestamp())
        return self._conditional(
            source_id,
            "SET planned_at = :now",
            "attribute_not_exists(planned_at) OR planned_at <= :due",
            {":now": epoch, ":due": epoch - int(interval.total_seconds())},
        )

    def advance(self, source_id: str, until: datetime) -> None:
        """Move the checkpoint forward to ``until`` (never back: a slower run may finish last)."""
        self._conditional(
            source_id,
            "SET checkpoint_until = :until",
            "attribute_not_exists(checkpoint_until) OR checkpoint_until < :until",
            {":until": iso(until)},
        )

    def record(self, report: RunReport) -> None:
        now = utc_now()
        summary = {k: v for k, v in report.to_dict().items() if v not in (None, [], "")}
        if report.problems:
            # A provider with thousands of bad records must not make the record too big to write.
            shown = [problem[:MAX_PROBLEM_CHARS] for problem in report.problems[:MAX_PROBLEMS]]
            hidden = len(report.problems) - len(shown)
            summary["problems"] = shown + ([f"{hidden} more not shown"] if hidden else [])
        expires = int((now + timedelta(days=RUN_RECORD_DAYS)).timestamp())
        run_key = self._key(report.source_id, f"RUN#{report.started_at}#{uuid.uuid4().hex[:8]}")
        self._table.put_item(Item={**run_key, **summary, "expires_at": expires})
        self._table.update_item(
            Key=self._key(report.source_id),
            UpdateExpression="SET last_run = :run",
            ExpressionAttributeValues={":run": summary},
        )

    def _conditional(self, source_id: str, update: str, condition: str, values: dict[str, Any]) -> bool:
        try:
            self._table.update_item(
                Key=self._key(source_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return False
        return True


def reconcile_window(
    settings: ReconcileSettings,
    now: datetime,
    checkpoint: datetime | None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> TimeWindow | None:
    """The calls a run reads: a backfill's ``start``..``end``, or the schedule's window from the
    checkpoint minus the overlap (the first run: ``first_lookback`` ago) to ``wait_for_push``
    ago; None when there is nothing to read yet. Calls ending after ``wait_for_push`` ago are
    left to a later run either way."""
    settled_before = now - settings.wait_for_push
    if start is None or end is None:
        start = checkpoint - settings.overlap if checkpoint else now - settings.first_lookback
        # After a long outage the backlog is read a day past the checkpoint per run, not in one
        # oversized window (a PBX's CSV of a month, a reconciler timeout).
        end = min(settled_before, start + settings.overlap + MAX_SCHEDULED_ADVANCE)
    end = min(end, now)
    if end <= start:
        return None
    return TimeWindow(start=start, end=end, settled_before=settled_before)


class Reconciler:
    """Runs reconciliation for one source at a time; see the module docstring."""

    def __init__(
        self,
        *,
        ledger: RecordingLedger,
        state: ReconcileState,
        queue: JobQueue,
        s3: Any,
        bucket: str,
        runtime: ProviderRuntime,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._ledger = ledger
        self._state = state
        self._queue = queue
        self._s3 = s3
        self._bucket = bucket
        self._runtime = runtime
        self._clock = clock

    def due(self, sources: Iterable[Source]) -> list[str]:
        """The sources whose interval has passed since their last planned run (each claimed, so
        two planners at once start one run)."""
        now = self._clock()
        return [
            source.id
            for source in sources
            if source.reconcile.enabled and self._state.claim_slot(source.id, now, source.reconcile.interval)
        ]

    def reconcile(self, source: Source, start: datetime | None = None, end: datetime | None = None) -> RunReport:
        """One run: the scheduled window (from the checkpoint) or, with ``start`` and ``end``, a
        backfill of that range that leaves the checkpoint alone. Provider trouble and bad
        provider data end the run ``failed`` with the reason; they are not raised."""
        now = self._clock()
        backfill = start is not None or end is not None
        report = RunReport(source.id, "backfill" if backfill else "scheduled", iso(now))
        # A range without a UTC offset is the source's wall clock (the PBX's day, say).
        start = start.replace(tzinfo=source.timezone) if start and not start.tzinfo else start
        end = end.replace(tzinfo=source.timezone) if end and not end.tzinfo else end
        try:
            lister = call_lister(source.provider)
            if lister is None:
                if backfill:
                    raise ReconcileRefused(
                        f"source {source.id!r} ({source.provider.name}) has no list of calls to backfill from:"
                        " only its expected recordings are swept, on schedule or without --from/--to"
                    )
                self._sweep_expectations(source, report, now)
            else:
                checkpoint = None if backfill else self._state.get(source.id).get("checkpoint_until")
                window = reconcile_window(
                    source.reconcile, now, datetime.fromisoformat(checkpoint) if checkpoint else None, start, end
                )
                if window is None:
                    report.status = "idle"
                else:
                    report.window_start, report.window_end = iso(window.start), iso(window.end)
                    listing = lister.list_calls(source, window, self._runtime)
                    self._archive_missing(source, listing, window, report)
                    if not backfill:
                        self._state.advance(source.id, window.end)
        except (FetchError, ConfigError) as error:
            report.status, report.error = "failed", str(error)
        except Exception as error:
            logger.exception("reconciliation failed", extra={"source_id": source.id})
            report.status, report.error = "failed", f"{type(error).__name__}: {error}"
        self._finish(report)
        return report

    def _archive_missing(self, source: Source, listing: CallListing, window: TimeWindow, report: RunReport) -> None:
        report.calls, report.deferred, report.problems = listing.calls, listing.deferred, listing.problems
        if listing.audit is not None:
            report.audit_key = self._keep_audit(source, listing.audit, window)
        jobs = list({job.identity: replace(job, origin=ORIGIN_RECONCILIATION) for job in listing.jobs}.values())
        report.found = len(jobs)
        handled = self._ledger.handled(jobs)
        missing = [job for job in jobs if job.identity not in handled]
        self._enqueue(missing, report)
        for job in missing:
            # Noted after enqueueing (a crash leaves nothing marked that is not queued), and only
            # for a named file: its note is the file's own item, which the fetcher's claim takes
            # over. A call's placeholder noted after a fast fetch had resolved it would stay QUEUED.
            if job.names_a_file:
                self._ledger.mark_queued(job, QUEUED_REASON)

    def _sweep_expectations(self, source: Source, report: RunReport, now: datetime) -> None:
        """Dypls: fetch the expected recordings whose receipt has not come by their due time."""
        missing: list[tuple[FetchJob, dict[str, str]]] = []
        for item in self._ledger.by_status(Status.EXPECTED, source_id=source.id):
            due = item.get("due_at")
            if not due or datetime.fromisoformat(str(due)) > now:
                continue
            report.calls += 1
            report.found += 1
            key = {"pk": str(item["pk"]), "sk": str(item["sk"])}
            if any(other["sk"] != key["sk"] for other in self._ledger.call_items(source.id, str(item["call_id"]))):
                self._ledger.forget(key, if_status=Status.EXPECTED)  # its receipt came: files are known
                continue
            try:
                job = FetchJob.from_json(str(item.get("job", ""))).fetch_now(ORIGIN_RECONCILIATION)
            except InvalidJob as exc:
                report.problems.append(f"call {item.get('call_id')}: the expectation holds no usable job ({exc})")
                continue
            missing.append((job, key))
        self._enqueue([job for job, _ in missing], report)
        for job, key in missing:
            self._ledger.move(key, Status.EXPECTED, Status.QUEUED, EXPECTED_REASON, job=job.to_json())

    def _enqueue(self, jobs: list[FetchJob], report: RunReport) -> None:
        report.lost_pushes = len(jobs)
        self._queue.enqueue(jobs)
        report.enqueued = len(jobs)
        for job in jobs:
            logger.warning(
                "push lost; reconciliation enqueued the recording",
                extra={"job": loggable(job)},
            )

    def _keep_audit(self, source: Source, listing: bytes, window: TimeWindow) -> str:
        """Keep the provider's raw listing (the PBX's CDR CSV) as evidence of what it said."""
        start, end = window.start.astimezone(source.timezone), window.end.astimezone(source.timezone)
        key = f"cdr/{safe_part(source.id)}/{start:%Y/%m/%d}/{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}.csv"
        self._s3.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=listing,
            ContentType="text/csv",
            Metadata={
                "source-id": source.id,
                "window-start": iso(window.start),
                "window-end": iso(window.end),
                "sha256": hashlib.sha256(listing).hexdigest(),
            },
        )
        return key

    def _finish(self, report: RunReport) -> None:
        log = logger.error if report.status == "failed" else logger.info
        log("reconciliation run", extra={"run": report.to_dict()})
        self._state.record(report)
        emit_run_metrics(report)


# A backfill invocation covers at most this much; ``callvault reconcile`` sends a day at a time.
MAX_BACKFILL = timedelta(days=31)


def backfill_request(event: Any) -> tuple[str, datetime | None, datetime | None]:
    """A direct invocation: ``{"source_id"}`` runs the scheduled reconciliation now;
    ``{"source_id", "from", "to"}`` (ISO 8601; without a UTC offset in the source's time zone)
    backfills that range."""
    if not isinstance(event, dict) or set(event) not in ({"source_id"}, {"source_id", "from", "to"}):
        raise ReconcileRefused('a reconcile request is {"source_id": …} or {"source_id": …, "from": …, "to": …}')
    source_id = event["source_id"]
    if not isinstance(source_id, str) or not source_id:
        raise ReconcileRefused("source_id must be a source id")
    if "from" not in event:
        return source_id, None, None
    moments = []
    for name in ("from", "to"):
        try:
            moments.append(datetime.fromisoformat(str(event[name])))
        except ValueError:
            raise ReconcileRefused(f"{name} is not an ISO 8601 time: {event[name]!r}") from None
    start, end = moments
    if (start.tzinfo is None) != (end.tzinfo is None):
        raise ReconcileRefused("from and to must both give a UTC offset, or neither")
    if start.year not in PLAUSIBLE_YEARS or end.year not in PLAUSIBLE_YEARS:
        raise ReconcileRefused(f"from and to must fall in the years {PLAUSIBLE_YEARS[0]} to {PLAUSIBLE_YEARS[-1]}")
    if not start < end <= start + MAX_BACKFILL:
        raise ReconcileRefused(f"from must be before to, at most {MAX_BACKFILL.days} days apart")
    return source_id, start, end


def source_request(body: str) -> str:
    """The source id of a reconcile-queue message."""
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    if not isinstance(request, dict) or not isinstance(request.get("source_id"), str):
        raise ValueError(f"reconcile request is not {{'source_id': …}}: {body[:200]!r}")
    return str(request["source_id"])


class ReconcileQueue:
    """The queue that fans scheduled reconciliation out: one message, one source, one invocation
    (a slow provider holds only its own run)."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url

    def request(self, source_ids: list[str]) -> None:
        for start in range(0, len(source_ids), 10):
            batch = source_ids[start : start + 10]
            reply = self._sqs.send_message_batch(
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "MessageBody": json.dumps({"source_id": s})} for i, s in enumerate(batch)],
            )
            if reply.get("Failed"):
                raise RuntimeError(f"reconcile queue refused {len(reply['Failed'])} requests: {reply['Failed']}")


def emit_run_metrics(report: RunReport) -> None:
    """CloudWatch metrics (EMF) of a run, per source and across sources (alarms use the latter)."""
    values = {
        "ReconciledRecordings": (MetricUnit.Count, report.found),
        "LostPushes": (MetricUnit.Count, report.lost_pushes),
        "ReconciliationFailures": (MetricUnit.Count, int(report.status == "failed")),
    }
    for dimensions in ({"source": report.source_id}, {}):
        publish_metrics(values, dimensions)
