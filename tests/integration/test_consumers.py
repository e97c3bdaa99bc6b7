"""Downstream consumers against the local stack deployed with every consumer option on: the
events a subscription on the bus receives (from the fetcher and from the retry workflow), the
sidecars and their catalogue copies, participants under the source's policy in all of them,
object tags and metadata, and the example transcription consumer as far as moto goes (it accepts
and completes a job but writes no transcript)."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest

from callvault.keys import catalog_key, sidecar_key
from local.consumer_contract import EventTap, problems
from local.emulator.stack import LocalStack
from local.simulators.pbx import PbxSimulator
from tests.integration.conftest import (
    RETRY_PARAMETERS,
    ZONE,
    Archive,
    Pbx,
    post_report,
    simulated_pbx_source,
    stack_of,
    started_pbxs,
    wait_for,
)

HASH_KEY = "consumer-test-hash-key-0123456789"
CALLER, CALLEE = "13800138000", "02161234567"


def hashed(number: str) -> str:
    return "hmac-sha256:" + hmac.new(HASH_KEY.encode(), number.encode(), "sha256").hexdigest()


@pytest.fixture(scope="module")
def pbxs() -> Iterator[dict[str, Pbx]]:
    yield from started_pbxs(
        {"hashing-pbx": PbxSimulator(tz=ZONE), "failing-pbx": PbxSimulator(tz=ZONE, password="the-real-password")}
    )


@pytest.fixture(scope="module")
def stack(pbxs: dict[str, Pbx], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    work = tmp_path_factory.mktemp("consumers")
    sources = [
        simulated_pbx_source(
            pbxs["hashing-pbx"],
            participants="hash",
            participants_hash_key=HASH_KEY,
            retention_class="archive-then-expire",
        ),
        simulated_pbx_source(pbxs["failing-pbx"]),  # participants masked: the default
    ]
    every_option = {**RETRY_PARAMETERS, "EnableTranscription": "true", "EnableCallCatalog": "true"}
    with stack_of(work, sources, parameters=every_option) as running:
        yield running


@pytest.fixture(scope="module")
def tap(stack: LocalStack) -> EventTap:
    return EventTap(stack.client("events"), stack.client("sqs"), stack.outputs["EventBusName"])


@pytest.fixture(scope="module")
def archive(stack: LocalStack) -> Archive:
    return Archive(stack)


class Received:
    """Events the tap received so far, kept across drains."""

    def __init__(self, tap: EventTap) -> None:
        self.tap = tap
        self.events: list[dict[str, Any]] = []

    def of(self, kind: str, call_id: str) -> list[dict[str, Any]]:
        self.events += self.tap.drain()
        return [e["detail"] for e in self.events if e["detail-type"] == kind and e["detail"]["call_id"] == call_id]


@pytest.fixture(scope="module")
def received(tap: EventTap) -> Received:
    return Received(tap)


def test_an_archived_call_reaches_consumers_with_hashed_numbers_its_sidecar_and_a_transcription(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx], received: Received
) -> None:
    pbx = pbxs["hashing-pbx"]
    call = pbx.simulator.place_call(CALLER, CALLEE, duration_s=12, call_type="Inbound", push=False)
    post_report(stack, pbx.source_id, call.report, token=pbx.token)
    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "STORED"

    # One RecordingArchived event, valid, saying what was stored and who took part (hashed)
    [event] = wait_for(lambda: received.of("RecordingArchived", call.callid), what="the RecordingArchived event")
    assert problems("RecordingArchived", event) == []
    assert (event["key"], event["sha256"], event["size"]) == (item["s3_key"], call.sha256, call.size)
    assert event["call"]["participants"] == [
        {"role": "caller", "number": hashed(CALLER)},
        {"role": "callee", "number": hashed(CALLEE)},
    ]
    assert (event["call"]["direction"], event["call"]["timezone"]) == ("inbound", "Asia/Shanghai")

    # The sidecar beside the recording and its catalogue copy: the same valid document
    sidecar_at = sidecar_key(pbx.source_id, item["call_time"], call.callid)
    sidecar = json.loads(archive.body(sidecar_at))
    assert problems("call.json", sidecar) == [] and archive.body(sidecar_at) == archive.body(
        catalog_key(pbx.source_id, item["call_time"], call.callid)
    )
    assert sidecar["call"] == event["call"] and [f["key"] for f in sidecar["files"]] == [item["s3_key"]]
    stored_text = archive.body(sidecar_at).decode() + json.dumps(event)
    assert CALLER not in stored_text and CALLEE not in stored_text

    # The recording carries its source's retention class and its sha256
    tags = archive.s3.get_object_tagging(Bucket=archive.bucket, Key=item["s3_key"])["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags}["callvault-retention"] == "archive-then-expire"
    head = archive.s3.head_object(Bucket=archive.bucket, Key=item["s3_key"])
    assert head["Metadata"]["sha256"] == call.sha256

    # The example consumer started one Transcribe job for it, writing next to the recording
    transcribe = stack.client("transcribe")
    job_name = f"callvault-{event['event_id']}"
    job = wait_for(
        lambda: next(
            (
                j
                for j in transcribe.list_transcription_jobs()["TranscriptionJobSummaries"]
                if j["TranscriptionJobName"] == job_name
            ),
            None,
        ),
        what="the transcription job",
    )
    assert job
    started = transcribe.get_transcription_job(TranscriptionJobName=job_name)["TranscriptionJob"]
    assert started["Media"]["MediaFileUri"] == f"s3://{archive.bucket}/{item['s3_key']}"
    # Nothing is owed to consumers any more
    assert "announce" not in archive.files(pbx.source_id, call.callid)[0]


def test_a_recording_given_up_on_reaches_consumers_as_recording_failed_from_the_workflow(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx], received: Received
) -> None:
    pbx = pbxs["failing-pbx"]  # the stack's password is not the PBX's: a permanent failure
    call = pbx.simulator.place_call(CALLER, CALLEE, duration_s=8, call_type="Outbound", push=False)
    post_report(stack, pbx.source_id, call.report, token=pbx.token)
    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "FAILED"

    [event] = wait_for(lambda: received.of("RecordingFailed", call.callid), what="the RecordingFailed event")
    assert problems("RecordingFailed", event) == []
    assert "rejected the API username or password" in event["reason"] and event["error"] == "PermanentFailure"
    assert event["call"]["participants"] == [
        {"role": "caller", "number": "***8000"},
        {"role": "callee", "number": "***4567"},
    ]
    # The PBX's name for the file carries both numbers; the event masks them, the ledger keeps it
    masked = item["file_name"].replace(CALLER, "xxxxxxx8000").replace(CALLEE, "xxxxxxx4567")
    assert CALLER in item["file_name"] and event["file_name"] == masked
    assert event["call"]["direction"] == "outbound"
    # The workflow cleared the debt once the event was out
    wait_for(lambda: "announce" not in archive.files(pbx.source_id, call.callid)[0], what="the debt to clear")
