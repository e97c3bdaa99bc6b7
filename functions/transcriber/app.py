"""Transcriber function (example consumer, ``EnableTranscription``): RecordingArchived events from
its queue → an Amazon Transcribe job per recording (callvault.transcription)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext

from callvault.config import settings
from callvault.observability import logger, tracer
from callvault.sqs_batch import BatchResponse, QueueMessage, handle_batch
from callvault.transcription import NotAnArchivedRecording, start_transcription, transcription_for


@lru_cache(maxsize=1)
def _transcribe() -> Any:
    return boto3.client("transcribe")


def transcribe_record(record: QueueMessage) -> None:
    try:
        job = transcription_for(record.body)
    except NotAnArchivedRecording as exc:
        # Not for this consumer: dropping it is the answer (a redelivery would not change it).
        logger.warning("message ignored", extra={"reason": str(exc)})
        return
    if job is None:
        logger.info("not audio Transcribe reads; skipped")
        return
    start_transcription(_transcribe(), job, settings().transcription_language_code)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> BatchResponse:
    return handle_batch(event, transcribe_record)
