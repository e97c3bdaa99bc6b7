"""What each operator command does, apart from how ``callvault`` prints it.

Everything goes through the stack's own resources (the ledger and its indexes, the fetch queue
and its DLQ, the reconciler function), never a Scan.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from callvault.fetch_slots import FetchSlots
from callvault.jobs import JobQueue
from callvault.ledger import RecordingLedger, Status
from callvault.models import ORIGIN_OPERATOR, FetchJob, InvalidJob
from callvault.reconciliation import ReconcileState
from callvault.timefmt import iso, utc_now

# How long a message being looked at or moved stays invisible to other readers of the DLQ.
DLQ_LOOK_SECONDS = 60
SQS_BATCH = 10


def plain(value: Any) -> Any:
    """A ledger value as JSON has it (DynamoDB numbers come back as Decimal)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [plain(v) for v in value]
    return value


# -- status, failed ----------------------------------------------------------------------


def call_files(ledger: RecordingLedger, source_id: str, call_id: str) -> list[dict[str, Any]]:
    """Every ledger item of one call, without the internal bookkeeping."""
    hidden = {"job", "lease_id", "lease_until", "open_status"}
    return [{k: plain(v) for k, v in item.items() if k not in hidden} for item in ledger.call_items(source_id, call_id)]


def failed_files(ledger: RecordingLedger, source_id: str | None, since: datetime | None) -> list[dict[str, Any]]:
    """FAILED files, oldest first (the ByStatus index, filtered by source)."""
    items = ledger.by_status(Status.FAILED, since=iso(since) if since else None, source_id=source_id)
    return [{k: plain(v) for k, v in item.items() if k not in ("job", "open_status")} for item in items]


# -- retry -------------------------------------------------------------------------------


@dataclass
class RetryOutcome:
    files: list[str] = field(default_factory=list)  # "source/call/file" of every file retried
    jobs: int = 0
    refused: list[str] = field(default_factory=list)  # files that could not be retried, and why


def retry_failed(ledger: RecordingLedger, queue: JobQueue, items: Iterable[dict[str, Any]], who: str) -> RetryOutcome:
    """Enqueue FAILED files again with a fresh attempt budget, noting who asked and when.

    The job is the one the ledger kept for the file (for a call whose files the provider lists,
    the whole call: files already stored are not fetched again).
    """
    outcome = RetryOutcome()
    jobs: dict[str, FetchJob] = {}
    chosen: list[tuple[dict[str, Any], FetchJob]] = []
    for item in items:
        name = f"{item.get('source_id')}/{item.get('call_id')}/{str(item.get('sk', '')).removeprefix('FILE#')}"
        if item.get("status") != Status.FAILED.value:
            outcome.refused.append(f"{name}: {item.get('status')}, not FAILED")
            continue
        try:
            job = FetchJob.from_json(str(item.get("job") or "")).fetch_now(ORIGIN_OPERATOR)
        except InvalidJob:
            outcome.refused.append(f"{name}: the ledger holds no job for it (archived before jobs were kept)")
            continue
        jobs.setdefault(job.identity, job)
        chosen.append((item, job))
        outcome.files.append(name)
    queue.enqueue(list(jobs.values()))  # enqueued first: a crash leaves a FAILED file, not a lost job
    now = iso(utc_now())
    for item, _ in chosen:
        key = {"pk": str(item["pk"]), "sk": str(item["sk"])}
        # Who and when stay on the item even if the fetcher has already taken it over.
        ledger.annotate(key, retried_by=who, retried_at=now)
        reason = f"retry requested by {who} at {now} (was FAILED: {item.get('reason', 'no reason')})"
        ledger.move(key, Status.FAILED, Status.QUEUED, reason)
    outcome.jobs = len(jobs)
    return outcome


# -- dead-letter queue -------------------------------------------------------------------


@dataclass(frozen=True)
class ParkedMessage:
    message_id: str
    sent_at: str
    receives: int
    job: str | None  # the job's identity, when the body is a valid job
    problem: str | None  # why it is not a valid job


def _parked(message: dict[str, Any]) -> ParkedMessage:
    attributes = message.get("Attributes", {})
    sent = datetime.fromtimestamp(int(attributes.get("SentTimestamp", "0")) / 1000).astimezone()
    try:
        job: str | None = FetchJob.from_json(message.get("Body", "")).identity
        problem = None
    except InvalidJob as exc:
        job, problem = None, str(exc)
    return ParkedMessage(
        message["MessageId"], iso(sent), int(attributes.get("ApproximateReceiveCount", "0")), job, problem
    )


def _receive(sqs: Any, queue_url: str, seen: set[str]) -> Iterator[dict[str, Any]]:
    """Every message of a queue once, each left invisible for a minute (then visible again)."""
    while True:
        reply = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=SQS_BATCH,
            VisibilityTimeout=DLQ_LOOK_SECONDS,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
        )
        fresh = [m for m in reply.get("Messages", []) if m["MessageId"] not in seen]
        if not fresh:
            return
        for message in fresh:
            seen.add(message["MessageId"])
            yield message


def _release(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), SQS_BATCH):
        chunk = messages[start : start + SQS_BATCH]
        sqs.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for i, m in enumerate(chunk)
            ],
        )


def dlq_list(sqs: Any, dlq_url: str, limit: int) -> list[ParkedMessage]:
    """The messages parked in the DLQ (up to ``limit``), left in place."""
    looked: list[dict[str, Any]] = []
    for message in _receive(sqs, dlq_url, set()):
        looked.append(message)
        if len(looked) >= limit:
            break
    _release(sqs, dlq_url, looked)
    return [_parked(m) for m in looked]


def dlq_redrive(sqs: Any, dlq_url: str, queue_url: str, limit: int) -> tuple[list[ParkedMessage], list[ParkedMessage]]:
    """Move valid jobs from the DLQ back to the fetch queue (up to ``limit``); messages that are
    not valid jobs stay parked (they would only come back). Returns (moved, kept)."""
    moved: list[ParkedMessage] = []
    kept: list[dict[str, Any]] = []
    for message in _receive(sqs, dlq_url, set()):
        parked = _parked(message)
        if parked.job is None:
            kept.append(message)
            continue
        # In its source's message group, as every job travels (the fetch queue is a fair queue).
        sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"], MessageGroupId=parked.job.split("/", 1)[0])
        sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
        moved.append(parked)
        if len(moved) >= limit:
            break
    _release(sqs, dlq_url, kept)
    return moved, [_parked(m) for m in kept]


# -- reconcile ---------------------------------------------------------------------------


class ReconcileFailed(Exception):
    """The reconciler refused the request or could not be invoked; the message says why."""


def invoke_reconciler(lambda_client: Any, function: str, request: dict[str, Any]) -> dict[str, Any]:
    reply = lambda_client.invoke(FunctionName=function, Payload=json.dumps(request).encode())
    payload = json.loads(reply["Payload"].read() or b"null")
    if reply.get("FunctionError"):
        message = payload.get("errorMessage") if isinstance(payload, dict) else payload
        raise ReconcileFailed(f"the reconciler failed: {message}")
    if not isinstance(payload, dict):
        raise ReconcileFailed(f"the reconciler answered {payload!r}")
    if payload.get("status") == "refused":
        raise ReconcileFailed(str(payload.get("error")))
    return payload


def reconcile_range(
    lambda_client: Any,
    function: str,
    source_id: str,
    start: datetime,
    end: datetime,
    progress: Callable[[int, int, dict[str, Any]], None],
    step: timedelta = timedelta(days=1),
) -> list[dict[str, Any]]:
    """Backfill [start, end) one ``step`` at a time (each a synchronous reconciler run)."""
    windows: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        windows.append((cursor, min(end, cursor + step)))
        cursor = windows[-1][1]
    reports = []
    for number, (low, high) in enumerate(windows, start=1):
        report = invoke_reconciler(
            lambda_client, function, {"source_id": source_id, "from": low.isoformat(), "to": high.isoformat()}
        )
        reports.append(report)
        progress(number, len(windows), report)
    return reports


# -- stats -------------------------------------------------------------------------------


def source_stats(
    ledger: RecordingLedger, state: ReconcileState, slots: FetchSlots, source_ids: Iterable[str], since: datetime
) -> dict[str, dict[str, Any]]:
    """Per source: files by status for calls since ``since`` (by call date), the last
    reconciliation run, and its fetches in flight and waiting for a slot now."""
    first_day = since.date().isoformat()
    stats: dict[str, dict[str, Any]] = {}
    for source_id in source_ids:
        counts = Counter(
            str(item.get("status"))
            for item in ledger.by_call_date(source_id, first_day, "9999-12-31", attributes=("status",))
        )
        last = plain(state.get(source_id).get("last_run") or {})
        load = slots.load(source_id)
        stats[source_id] = {
            "files": dict(sorted(counts.items())),
            "last_reconciliation": last,
            # Right now: downloads holding one of its fetch slots, jobs waiting for one.
            "fetching": {
                "in_flight": load.in_flight,
                "waiting": load.waiting,
                "waiting_since": load.oldest_waiting_since,
            },
        }
    return stats
