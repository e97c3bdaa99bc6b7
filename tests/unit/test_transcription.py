"""The example consumer reads RecordingArchived events as its queue delivers them and starts one
Transcribe job per recording, named after the event, so a repeated event changes nothing."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from callvault.errors import ConfigError
from callvault.transcription import start_transcription, transcription_for
from local.consumer_contract import problems
from tests.conftest import ROOT

DETAIL = {
    "version": "1",
    "event_id": "0123456789abcdef0123456789abcdef",
    "source_id": "office-pbx",
    "provider": "pbx",
    "call_id": "1796220055.1772",
    "file_name": "exten-101.wav",
    "bucket": "archive",
    "key": "recordings/office-pbx/2026/12/02/1796220055.1772/exten-101.wav",
    "version_id": None,
    "size": 3040044,
    "sha256": "a" * 64,
    "content_type": "audio/wav",
    "call": {
        "started_at": "2026-12-02T14:00:55Z",
        "started_at_local": "2026-12-02T22:00:55+08:00",
        "timezone": "Asia/Shanghai",
        "ended_at": None,
        "ended_at_local": None,
        "duration_seconds": None,
        "direction": None,
        "participants": [],
    },
    "attempts": 1,
    "origin": "push",
    "archived_at": "2026-12-02T14:01:10Z",
}


def delivered(detail: dict[str, Any], detail_type: str = "RecordingArchived") -> str:
    """The body of the message an EventBridge rule's SQS target receives."""
    return json.dumps({"version": "0", "source": "callvault", "detail-type": detail_type, "detail": detail})


def test_the_example_event_is_a_valid_recording_archived_and_a_broken_one_is_not() -> None:
    assert problems("RecordingArchived", DETAIL) == []
    broken = {**DETAIL, "sha256": "not-a-digest", "size": 0}
    broken.pop("bucket")
    found = problems("RecordingArchived", broken)
    assert any("bucket" in p for p in found) and any(p.startswith("sha256") for p in found)
    assert any(p.startswith("size") for p in found)


def test_an_archived_recording_becomes_a_transcript_next_to_it() -> None:
    job = transcription_for(delivered(DETAIL))

    assert job is not None
    assert job.job_name == "callvault-0123456789abcdef0123456789abcdef"
    assert job.media_uri == f"s3://archive/{DETAIL['key']}" and job.media_format == "wav"
    assert (job.output_bucket, job.output_key) == ("archive", DETAIL["key"] + ".transcript.json")


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        delivered(DETAIL, "RecordingFailed"),
        delivered({**DETAIL, "version": "2"}),
        delivered({"version": "1"}),
    ],
    ids=["not-json", "another-event", "unknown-version", "incomplete"],
)
def test_what_is_not_a_recording_archived_v1_event_is_refused_with_the_reason(body: str) -> None:
    with pytest.raises(ConfigError):
        transcription_for(body)


def test_a_key_with_characters_transcribe_refuses_gets_a_transcript_key_it_takes() -> None:
    renamed = {**DETAIL, "key": "recordings/shop-ccc/2026/12/02/c1/a_b~1f2e3d4c.wav"}
    job = transcription_for(delivered(renamed))
    assert job is not None and job.output_key == "recordings/shop-ccc/2026/12/02/c1/a_b-1f2e3d4c.wav.transcript.json"


def test_a_file_transcribe_cannot_read_is_skipped() -> None:
    assert transcription_for(delivered({**DETAIL, "content_type": "application/octet-stream"})) is None


@mock_aws
def test_a_repeated_event_starts_the_job_once() -> None:
    transcribe = boto3.client("transcribe", region_name="us-east-1")
    job = transcription_for(delivered(DETAIL))
    assert job is not None

    assert start_transcription(transcribe, job, "zh-CN") == "started"
    assert start_transcription(transcribe, job, "zh-CN") == "already started"

    [summary] = transcribe.list_transcription_jobs()["TranscriptionJobSummaries"]
    assert summary["TranscriptionJobName"] == job.job_name
    started = transcribe.get_transcription_job(TranscriptionJobName=job.job_name)["TranscriptionJob"]
    assert started["Media"]["MediaFileUri"] == job.media_uri and started["LanguageCode"] == "zh-CN"


@pytest.mark.parametrize("name", ["recording-archived.json", "recording-failed.json"])
def test_the_sample_consumer_events_follow_the_schemas(name: str) -> None:
    event = json.loads((ROOT / "events" / "consumers" / name).read_text())
    assert event["source"] == "callvault"
    assert problems(event["detail-type"], event["detail"]) == []


def test_the_transcribers_sample_event_asks_for_a_transcript_next_to_its_recording() -> None:
    [record] = json.loads((ROOT / "events" / "transcriber-sqs.json").read_text())["Records"]
    job = transcription_for(record["body"])
    assert job is not None and job.output_key.endswith(".wav.transcript.json")
