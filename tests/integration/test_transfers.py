"""How a recording gets across, end to end: a download that breaks off resumes within the same
attempt (OSS honours ``Range``) to an object whose sha256 and size are the original's; a PBX
that ignores ``Range`` gets a clean restart; S3 refusing a part aborts the upload, leaving no
part behind, and the job is retried.

Real HTTP to the simulators, real S3 API calls to moto (5 MiB parts, S3's smallest, so that a
recording of a few MB is a multipart upload), the real fetcher handler.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto.s3.exceptions import S3ClientError
from moto.s3.models import S3Backend

from callvault.config import TransferSettings
from local.emulator.stack import LocalStack
from local.simulators.ccc import CccFile, CccSimulator
from tests.conftest import sample_event
from tests.integration.conftest import PART_SIZE, AlibabaSource, Archive, Pbx, forward, pbx_job, wait_for

pytestmark = pytest.mark.integration

READ_SIZE = TransferSettings.read_size


def resume_ccc(alibaba: dict[str, AlibabaSource]) -> tuple[AlibabaSource, CccSimulator]:
    source = alibaba["resume-ccc"]
    assert isinstance(source.simulator, CccSimulator)
    return source, source.simulator


def composite_crc32(data: bytes) -> str:
    """The checksum S3 keeps for an object uploaded in ``PART_SIZE`` parts that carried their CRC32."""
    crcs = b"".join(zlib.crc32(data[i : i + PART_SIZE]).to_bytes(4, "big") for i in range(0, len(data), PART_SIZE))
    return base64.b64encode(zlib.crc32(crcs).to_bytes(4, "big")).decode()


@pytest.mark.parametrize(
    "break_at",
    ["first byte", "mid-part", "part boundary", "last byte"],
)
def test_a_download_broken_off_resumes_in_the_same_attempt_to_the_original_bytes(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource], break_at: str
) -> None:
    source, simulator = resume_ccc(alibaba)
    # Given a 400 s call: its merged .wav is 6.4 MB, two parts; its link is an OSS link
    call = simulator.place_call(duration_s=400, ready_after_s=0)
    wav = wav_of(call.files)
    at = {"first byte": 0, "mid-part": PART_SIZE // 2, "part boundary": PART_SIZE, "last byte": wav.size - 1}
    # and OSS breaking the .wav off at that byte (the connection closes: everything before it arrives)
    simulator.oss.set_fault("truncate", at_byte=at[break_at], how="close", key_suffix=wav.key)
    sent_before = simulator.oss.counters.get("bytes_sent", 0)

    assert forward(stack, source, call).status_code == 200

    items = {item["file_name"]: item for item in archive.settled(source.source_id, call.contact_id, len(call.files))}
    item = items[wav.file_name]
    # Then the object is the original, archived in the first attempt
    assert (item["status"], int(item["attempts"])) == ("STORED", 1)
    assert (item["sha256"], int(item["size"])) == (wav.sha256, wav.size)
    original = simulator.file_bytes(wav)
    assert hashlib.sha256(archive.body(item["s3_key"])).hexdigest() == wav.sha256
    # resumed with a range request (from byte 0, a plain one), downloading again at most the read
    # that was under way (the HTTP client drops a partial read when the body ends early)
    requests_for_wav = [entry for entry in simulator.oss.request_log if entry.key == wav.key]
    assert [entry.status for entry in requests_for_wav] == [200, 206 if at[break_at] else 200]
    every_file = sum(f.size for f in call.files)

    def sent() -> int:  # the server counts a body once its last write returned
        return int(simulator.oss.counters["bytes_sent"] - sent_before)

    wait_for(lambda: sent() >= every_file, what="the simulator to count what it sent")
    assert sent() - every_file < READ_SIZE
    # and S3 verified every part and keeps their composite checksum
    attributes = archive.s3.get_object_attributes(
        Bucket=archive.bucket, Key=item["s3_key"], ObjectAttributes=["Checksum", "ObjectSize"]
    )
    assert attributes["Checksum"] == {"ChecksumCRC32": composite_crc32(original), "ChecksumType": "COMPOSITE"}
    assert attributes["ObjectSize"] == wav.size
    assert archive.open_multipart_uploads() == []


def test_a_resume_whose_link_has_expired_asks_ccc_for_a_fresh_one(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source, simulator = resume_ccc(alibaba)
    call = simulator.place_call(duration_s=400, ready_after_s=0)
    wav = wav_of(call.files)
    # A break in the second part, and the link found expired when the transfer resumes
    simulator.oss.set_fault("truncate", at_byte=PART_SIZE + 1000, key_suffix=wav.key)
    simulator.oss.set_fault("expire_link", ranged=True, key_suffix=wav.key)
    listed_before = simulator.counters.get("action:DownloadAllTypeRecording", 0)

    assert forward(stack, source, call).status_code == 200

    items = {item["file_name"]: item for item in archive.settled(source.source_id, call.contact_id, len(call.files))}
    assert (items[wav.file_name]["status"], int(items[wav.file_name]["attempts"])) == ("STORED", 1)
    assert items[wav.file_name]["sha256"] == wav.sha256
    assert [entry.status for entry in simulator.oss.request_log if entry.key == wav.key] == [200, 403, 206]
    # (the call's files, then a fresh link for the .wav)
    assert simulator.counters.get("action:DownloadAllTypeRecording", 0) == listed_before + 2


def test_a_pbx_that_ignores_range_gets_a_clean_restart(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["restart-pbx"]
    # Given a PBX that breaks a 6.4 MB stereo recording off twice, past its first part
    pbx.simulator.set_fault("truncate", 2, at_byte=PART_SIZE + 12345)

    call = pbx.simulator.place_call(duration_s=200, channels=2)

    # Then the file is archived intact in one attempt, downloaded whole three times
    [item] = archive.settled(pbx.source_id, call.callid)
    assert (item["status"], int(item["attempts"])) == ("STORED", 1)
    assert (item["sha256"], int(item["size"])) == (call.sha256, call.size)
    assert hashlib.sha256(archive.body(item["s3_key"])).hexdigest() == call.sha256
    assert pbx.simulator.counters["downloads_truncated"] == 2 and pbx.simulator.counters["downloads_ok"] == 1
    assert len(archive.versions(item["s3_key"])) == 1
    assert archive.open_multipart_uploads() == []


@dataclass
class RefusedPart:
    """Which part moto (S3, in this process) refuses, and the upload it belonged to."""

    key_suffix: str
    part_number: int
    upload_ids: list[str] = field(default_factory=list)


@pytest.fixture
def s3_refuses_a_part(monkeypatch: pytest.MonkeyPatch) -> Iterator[RefusedPart]:
    """S3 refusing one part of an upload with AccessDenied (as when the bucket's KMS key is
    disabled mid-way); the SDK does not retry a 403, and its retries would meet the same answer."""
    refused = RefusedPart(key_suffix="", part_number=2)
    upload_part = S3Backend.upload_part

    def refusing(backend: S3Backend, bucket_name: str, multipart_id: str, part_id: int, value: bytes) -> Any:
        multipart = backend.get_bucket(bucket_name).multiparts[multipart_id]
        ours = refused.key_suffix and multipart.key_name.endswith(refused.key_suffix)
        # The first upload of the key is refused that part however often it is retried.
        if ours and part_id == refused.part_number and refused.upload_ids in ([], [multipart_id]):
            refused.upload_ids[:] = [multipart_id]
            raise S3ClientError("AccessDenied", "Access Denied")
        return upload_part(backend, bucket_name, multipart_id, part_id, value)

    monkeypatch.setattr(S3Backend, "upload_part", refusing)
    yield refused


def test_s3_refusing_a_part_mid_stream_aborts_the_upload_and_the_job_is_retried(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx], s3_refuses_a_part: RefusedPart
) -> None:
    pbx = pbxs["storage-pbx"]
    # Given a 19.2 MB recording (four parts) and S3 refusing its second part
    call = pbx.simulator.place_call(duration_s=600, channels=2, push=False)
    s3_refuses_a_part.key_suffix = f"/{call.recording}"
    event = sample_event("fetcher-sqs.json")
    event["Records"][0] |= {"messageId": "delivery-1", "body": json.dumps(pbx_job(pbx, call))}

    # When the fetcher takes the job
    reply = stack.invoke("FetcherFunction", event)

    # Then the upload is aborted, no part is left, and the retry workflow has the job with the reason
    assert reply == {"batchItemFailures": []}
    [upload_id] = s3_refuses_a_part.upload_ids
    assert archive.open_multipart_uploads() == []
    key = f"recordings/{pbx.source_id}/{call.timestart:%Y/%m/%d}/{call.callid}/{call.recording}"
    with pytest.raises(archive.s3.exceptions.NoSuchUpload):
        archive.s3.list_parts(Bucket=archive.bucket, Key=key, UploadId=upload_id)
    [handed_over] = retries_of(stack, call.callid)
    assert handed_over["retry"]["reason"] == "S3 could not upload part 2 (AccessDenied); the upload was aborted"
    assert (handed_over["retry"]["error"], handed_over["retry"]["give_up"]) == ("StorageUnavailable", False)

    # And the next attempt archives it intact
    [item] = archive.settled(pbx.source_id, call.callid)
    assert (item["status"], int(item["attempts"]), item["sha256"]) == ("STORED", 2, call.sha256)
    assert item["s3_key"] == key
    assert hashlib.sha256(archive.body(key)).hexdigest() == call.sha256
    assert len(archive.versions(key)) == 1 and archive.open_multipart_uploads() == []


def retries_of(stack: LocalStack, call_id: str) -> list[dict[str, Any]]:
    """The inputs of the retry workflow executions started for a call (the fetcher's hand-overs)."""
    sfn = stack.client("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=stack.state["state_machine_arn"])["executions"]
    inputs = [json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"]) for e in executions]
    return [document for document in inputs if document["job"]["call_id"] == call_id]


def wav_of(files: list[CccFile]) -> CccFile:
    [wav] = [f for f in files if f.file_name.endswith(".wav")]
    return wav
