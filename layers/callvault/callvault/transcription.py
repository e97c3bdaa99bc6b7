"""The example consumer (``EnableTranscription``): each ``RecordingArchived`` event starts an
Amazon Transcribe job whose transcript Transcribe itself writes next to the recording,
``{key}.transcript.json``. The pattern any consumer can follow:

- subscribe with a rule on the bus to a queue of its own (retries, backpressure, a dead-letter
  queue behind an alarm), never to the function directly;
- validate the event (``version``) and ignore what is not for it;
- be idempotent: events come at least once, so the job is named after the event's ``event_id``
  and a second start of the same job is a success, not an error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from callvault.errors import ConfigError
from callvault.observability import logger

SUPPORTED_VERSION = "1"
# What Transcribe can read (MediaFormat), by the archived file's content type.
MEDIA_FORMATS = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/mpeg": "mp3",
    "audio/mp4": "mp4",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "audio/webm": "webm",
    "audio/amr": "amr",
}
TRANSCRIPT_SUFFIX = ".transcript.json"
# What Transcribe takes in an OutputKey; callvault's keys may hold "~" (a renamed file).
_NOT_IN_OUTPUT_KEY = re.compile(r"[^a-zA-Z0-9\-_.!*'()/]")


class NotAnArchivedRecording(ConfigError):
    """The queue message is not a RecordingArchived event this consumer understands."""


@dataclass(frozen=True)
class Transcription:
    job_name: str
    media_uri: str
    media_format: str | None
    output_bucket: str
    output_key: str


def transcription_for(message_body: str) -> Transcription | None:
    """The job an EventBridge ``RecordingArchived`` event (as the rule's SQS target delivers it)
    asks for; None for a file Transcribe cannot read."""
    try:
        event = json.loads(message_body)
    except json.JSONDecodeError as exc:
        raise NotAnArchivedRecording(f"message is not JSON: {exc}") from None
    if not isinstance(event, dict) or event.get("detail-type") != "RecordingArchived":
        raise NotAnArchivedRecording("message is not a RecordingArchived event")
    detail = event.get("detail")
    version = detail.get("version") if isinstance(detail, dict) else None
    if not isinstance(detail, dict) or version != SUPPORTED_VERSION:
        raise NotAnArchivedRecording(f"RecordingArchived version {version!r} is not {SUPPORTED_VERSION}")
    try:
        bucket, key, event_id = str(detail["bucket"]), str(detail["key"]), str(detail["event_id"])
    except KeyError as exc:
        raise NotAnArchivedRecording(f"RecordingArchived lacks {exc}") from None
    content_type = str(detail.get("content_type", ""))
    media_format = MEDIA_FORMATS.get(content_type)
    if media_format is None and not content_type.startswith("audio/"):
        return None
    return Transcription(
        job_name=f"callvault-{event_id}",
        media_uri=f"s3://{bucket}/{key}",
        media_format=media_format,
        output_bucket=bucket,
        output_key=_NOT_IN_OUTPUT_KEY.sub("-", key) + TRANSCRIPT_SUFFIX,
    )


def start_transcription(transcribe: Any, job: Transcription, language_code: str) -> str:
    """Start the job: ``started``, ``already started`` (a repeated event) or ``refused`` (a
    recording Transcribe cannot take; throttling and the like raise, and the queue retries)."""
    params: dict[str, Any] = {
        "TranscriptionJobName": job.job_name,
        "Media": {"MediaFileUri": job.media_uri},
        "OutputBucketName": job.output_bucket,
        "OutputKey": job.output_key,
    }
    if job.media_format:
        params["MediaFormat"] = job.media_format
    if language_code:
        params["LanguageCode"] = language_code
    else:
        params["IdentifyLanguage"] = True
    try:
        transcribe.start_transcription_job(**params)
    except transcribe.exceptions.ConflictException:
        logger.info("transcription already started", extra={"job": job.job_name})
        return "already started"
    except transcribe.exceptions.BadRequestException as exc:
        # Transcribe will never take this one (a format or size it cannot read): retrying would
        # only park it in the dead-letter queue. Said in the log, and done.
        logger.warning("Transcribe refused the recording", extra={"job": job.job_name, "reason": str(exc)})
        return "refused"
    logger.info("transcription started", extra={"job": job.job_name, "output": job.output_key})
    return "started"
