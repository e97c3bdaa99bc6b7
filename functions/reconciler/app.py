"""Reconciler function: archives the recordings whose push was lost (callvault.reconciliation).

One function, three triggers:
- the schedule (every 5 minutes): one request per source whose interval has passed goes onto
  the reconcile queue, so each source runs in its own invocation; then the sidecars and events
  still owed to consumers are sent (callvault.announcements);
- the reconcile queue: reconcile one source, from its checkpoint;
- a direct invocation ``{"source_id": …, "from": ISO time, "to": ISO time}`` (the operator's
  ``callvault reconcile``): backfill that range now and answer with the run's report.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext

from callvault.announcements import Announcer, announcer
from callvault.config import settings
from callvault.errors import ConfigError, SourceNotFound
from callvault.http import HttpClients
from callvault.jobs import JobQueue
from callvault.ledger import RecordingLedger
from callvault.observability import logger, tracer
from callvault.provider_state import ProviderState
from callvault.providers.interface import ProviderRuntime
from callvault.reconciliation import ReconcileQueue, Reconciler, ReconcileState, backfill_request, source_request
from callvault.sources import SourceDirectory
from callvault.sqs_batch import QueueMessage, handle_batch


@lru_cache(maxsize=1)
def _dependencies() -> tuple[SourceDirectory, Reconciler, ReconcileQueue, Announcer]:
    config = settings()
    table = boto3.resource("dynamodb").Table(config.ledger_table)
    sqs = boto3.client("sqs")
    s3 = boto3.client("s3")
    ledger = RecordingLedger(table)
    reconciler = Reconciler(
        ledger=ledger,
        state=ReconcileState(table),
        queue=JobQueue(sqs, config.fetch_queue_url),
        s3=s3,
        bucket=config.recordings_bucket,
        runtime=ProviderRuntime(
            http=HttpClients(), state=ProviderState(table), webhook_base_url=config.public_webhook_base_url()
        ),
    )
    sources = SourceDirectory(boto3.client("secretsmanager"), config.sources_secret_prefix)
    return sources, reconciler, ReconcileQueue(sqs, config.reconcile_queue()), announcer(config, ledger, s3, sources)


def plan() -> dict[str, Any]:
    sources, reconciler, requests, owed = _dependencies()
    found, problems = sources.all()
    due = reconciler.due(found)
    requests.request(due)
    for source_id, reason in problems.items():
        logger.error("source cannot be reconciled", extra={"source_id": source_id, "reason": reason})
    logger.info("reconciliation planned", extra={"due": due})
    announced = owed.sweep()
    if any(announced.values()):
        logger.info("owed sidecars and events sent", extra=announced)
    return {"requested": due, "unreadable_sources": problems, "announced": announced}


def reconcile_record(record: QueueMessage) -> None:
    sources, reconciler, _, _ = _dependencies()
    source_id = source_request(record.body)
    try:
        source = sources.get(source_id)
    except (SourceNotFound, ConfigError) as exc:
        # Removed or broken since it was planned: nothing to retry; the planner reports broken ones.
        logger.error("source to reconcile cannot be read", extra={"source_id": source_id, "reason": str(exc)})
        return
    reconciler.reconcile(source)


def backfill(event: dict[str, Any]) -> dict[str, Any]:
    sources, reconciler, _, _ = _dependencies()
    try:
        source_id, start, end = backfill_request(event)
        source = sources.get(source_id)
    except (SourceNotFound, ConfigError) as exc:
        return {"status": "refused", "error": str(exc)}
    return reconciler.reconcile(source, start, end).to_dict()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    if isinstance(event, dict) and "Records" in event:
        return handle_batch(event, reconcile_record)
    if isinstance(event, dict) and event.get("detail-type") == "Scheduled Event":
        return plan()
    return backfill(event)
