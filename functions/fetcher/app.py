"""Fetcher function: SQS batch of FetchJobs → recordings in S3, ledger updated, failures reported."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext

from callvault.announcements import announcer
from callvault.call_facts import loggable
from callvault.config import settings
from callvault.fetch_slots import FetchSlots
from callvault.fetching import Fetcher
from callvault.http import HttpClients
from callvault.jobs import JobQueue, RetryWorkflow
from callvault.ledger import RecordingLedger, lease_seconds_for
from callvault.models import FetchJob
from callvault.observability import logger, tracer
from callvault.provider_state import ProviderState
from callvault.providers.interface import ProviderRuntime
from callvault.sources import SourceDirectory
from callvault.sqs_batch import BatchResponse, QueueMessage, handle_batch

# The invocation being served, for the time it has left (Lambda runs one at a time).
_invocation: dict[str, LambdaContext] = {}


@lru_cache(maxsize=1)
def _fetcher() -> Fetcher:
    config = settings()
    table = boto3.resource("dynamodb").Table(config.ledger_table)
    sources = SourceDirectory(boto3.client("secretsmanager"), config.sources_secret_prefix)
    ledger = RecordingLedger(table)
    s3 = boto3.client("s3")
    return Fetcher(
        sources=sources,
        ledger=ledger,
        s3=s3,
        bucket=config.recordings_bucket,
        runtime=ProviderRuntime(
            http=HttpClients(), state=ProviderState(table), webhook_base_url=config.public_webhook_base_url()
        ),
        workflow=RetryWorkflow(lambda: boto3.client("stepfunctions"), config.retry_state_machine_arn),
        retry=config.retry,
        transfer=config.transfer,
        time_left=lambda: _remaining_ms() / 1000,
        announcer=announcer(config, ledger, s3, sources),
        slots=FetchSlots(table),
        requeue=lambda job, delay: _fetch_queue().enqueue([job], delay_seconds=delay),
        deferral_max_seconds=config.fetch_deferral_max_seconds,
    )


@lru_cache(maxsize=1)
def _fetch_queue() -> JobQueue:
    """Made when a job is first deferred: most invocations never need an SQS client."""
    return JobQueue(boto3.client("sqs"), settings().fetch_queue_url)


def _remaining_ms() -> int:
    context = _invocation.get("context")
    return int(context.get_remaining_time_in_millis()) if context else 300_000


def fetch_record(record: QueueMessage) -> None:
    # A malformed message raises InvalidJob: reported as failed, redelivered, then parked
    # in the DLQ (alarmed) rather than silently dropped.
    job = FetchJob.from_json(record.body)
    report = _fetcher().process(job, lease_seconds_for(_remaining_ms()), delivery_id=record.message_id)
    logger.debug("fetch attempt done", extra={"job": loggable(job), "stored": len(report.stored)})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> BatchResponse:
    _invocation["context"] = context
    return handle_batch(event, fetch_record)
