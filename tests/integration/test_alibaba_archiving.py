"""Alibaba Cloud Call Center and number privacy protection, end to end.

The simulators verify our request signatures, hand out OSS-style signed links that expire,
answer "not ready" until a recording exists, and push events and receipt batches like the
real services. The stack is the one of template.yaml, in moto, with the real handlers.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from local.emulator.stack import LocalStack
from local.simulation import with_token
from local.simulators.ccc import CccSimulator
from local.simulators.dypls import DyplsSimulator
from tests.bystander import Bystander
from tests.integration.conftest import AlibabaSource, Archive, forward, wait_for, webhook_url

pytestmark = pytest.mark.integration


def ccc(alibaba: dict[str, AlibabaSource], source_id: str) -> tuple[AlibabaSource, CccSimulator]:
    source = alibaba[source_id]
    assert isinstance(source.simulator, CccSimulator)
    return source, source.simulator


def dypls(alibaba: dict[str, AlibabaSource], source_id: str) -> tuple[AlibabaSource, DyplsSimulator]:
    source = alibaba[source_id]
    assert isinstance(source.simulator, DyplsSimulator)
    return source, source.simulator


def by_file(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["file_name"]: item for item in items}


def test_a_transferred_call_gives_one_object_and_one_ledger_item_per_file(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source, simulator = ccc(alibaba, "ccc-2017")
    # Given a call transferred once: the dual-track .mkv and a merged .wav per leg
    call = simulator.place_call(transferred_legs=1, duration_s=40, ready_after_s=0)
    assert len(call.files) == 3

    assert forward(stack, source, call).status_code == 200

    items = by_file(archive.settled(source.source_id, call.contact_id, count=3))
    assert sorted(items) == sorted(call.file_names)
    for file in call.files:
        item = items[file.file_name]
        assert item["status"] == "STORED"
        assert (item["sha256"], int(item["size"])) == (file.sha256, file.size)
        assert len(archive.versions(item["s3_key"])) == 1
    assert any(name.endswith(".mkv") for name in items) and any(name.endswith(".wav") for name in items)


def test_a_signature_url_in_typographic_quotes_downloads(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source, simulator = ccc(alibaba, "ccc-typographic")
    call = simulator.place_call(duration_s=20, ready_after_s=0)

    assert forward(stack, source, call).status_code == 200

    items = archive.settled(source.source_id, call.contact_id, count=len(call.files))
    assert {item["status"] for item in items} == {"STORED"}


def test_not_exist_record_right_after_hang_up_and_the_file_later_ends_archived(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source, simulator = ccc(alibaba, "ccc-2017")
    # The agent hangs up; CCC writes the files later (on the simulator's clock, which the test moves)
    call = simulator.place_call(duration_s=20, ready_after_s=60)
    not_found_before = simulator.counters.get("error:NotExist.Record", 0)

    assert forward(stack, source, call).status_code == 200
    wait_for(
        lambda: simulator.counters.get("error:NotExist.Record", 0) > not_found_before,
        what="the first try to find no recording yet",
    )
    simulator.advance_time(60)  # the files are written

    items = archive.settled(source.source_id, call.contact_id, count=len(call.files))
    assert {item["status"] for item in items} == {"STORED"}
    assert all(int(item["attempts"]) == 1 for item in items)  # each file was fetched once it existed


@pytest.mark.parametrize(("fault", "params"), [("expire_url", {}), ("throttle", {}), ("error_5xx", {})])
def test_expired_links_throttling_and_outages_are_retried(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource], fault: str, params: dict[str, Any]
) -> None:
    source, simulator = ccc(alibaba, "ccc-2017")
    call = simulator.place_call(duration_s=20, ready_after_s=0)
    simulator.set_fault(fault, 1, **params)

    assert forward(stack, source, call).status_code == 200

    items = archive.settled(source.source_id, call.contact_id, count=len(call.files))
    assert {item["status"] for item in items} == {"STORED"}
    assert {item["sha256"] for item in items} == {file.sha256 for file in call.files}


def test_2020_recording_events_archive_the_mono_and_the_multichannel_recording(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source, simulator = ccc(alibaba, "ccc-2020")
    call = simulator.place_call(duration_s=30, ready_after_s=0)

    for event_type in ("RecordingReady", "DualTrackRecordingReady"):
        push = simulator.push_event(
            call, event_type, url=with_token(webhook_url(stack, source.source_id), source.token)
        )
        assert push.status == 200

    items = by_file(archive.settled(source.source_id, call.contact_id, count=2))
    for file in (call.mono, call.multi_channel):
        assert items[file.file_name]["status"] == "STORED"
        assert items[file.file_name]["sha256"] == file.sha256


def test_bad_credentials_end_as_failed_with_a_clear_reason_not_endless_retries(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source, simulator = ccc(alibaba, "ccc-wrong-secret")
    call = simulator.place_call(duration_s=10, ready_after_s=0)

    assert forward(stack, source, call).status_code == 200

    [item] = archive.settled(source.source_id, call.contact_id)
    assert item["status"] == "FAILED"
    assert "SignatureDoesNotMatch" in item["reason"] and "access key" in item["reason"]
    assert simulator.counters.get("error:SignatureDoesNotMatch") == 1


def test_a_dypls_batch_of_mixed_records_is_answered_at_once_fetches_receipts_and_expects_reported_calls(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    # The pool's API is unreachable: the webhook must not need it to answer.
    source, simulator = dypls(alibaba, "dypls-offline")
    first, second, reported_only, third = (simulator.place_call(duration_s=30) for _ in range(4))
    records = [
        simulator.secret_report(first),
        simulator.secret_recording(first),
        simulator.secret_recording(second, "mns"),  # subs_id instead of sub_id
        simulator.secret_report(reported_only),
        simulator.secret_recording(third),
    ]

    attempt = simulator.push_receipts(with_token(webhook_url(stack, source.source_id), source.token), records)
    reply = requests.post(
        with_token(webhook_url(stack, source.source_id), source.token), json=records, timeout=10
    )  # the platform's duplicate delivery, read here for the exact answer

    assert attempt.ok and attempt.status == 200
    assert reply.status_code == 200 and reply.json() == {"code": 0, "msg": "接收成功"}
    for call in (first, second, third):
        [item] = archive.settled(source.source_id, call.call_id)
        assert item["sk"] == "FILE#*" and "unreachable" in item["reason"]
    # A call only reported so far is expected: reconciliation fetches it if no receipt comes.
    [expected] = wait_for(lambda: archive.files(source.source_id, reported_only.call_id), what="the expectation")
    assert expected["status"] == "EXPECTED" and expected["due_at"] > expected["created_at"]


def test_a_dypls_recording_receipt_archives_the_mp3(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source, simulator = dypls(alibaba, "dypls-pool")
    call = simulator.place_call(duration_s=45, ready_after_s=60)  # "not ready" until the test says so
    not_ready_before = simulator.counters.get("error:isv.RECORD_NOT_EXIST", 0)

    batch = [simulator.secret_report(call), simulator.secret_recording(call)]
    assert simulator.push_receipts(with_token(webhook_url(stack, source.source_id), source.token), batch).ok
    wait_for(
        lambda: simulator.counters.get("error:isv.RECORD_NOT_EXIST", 0) > not_ready_before,
        what="the first try to find the recording not ready",
    )
    simulator.advance_time(60)  # the platform has the MP3 now

    [item] = archive.settled(source.source_id, call.call_id)
    assert item["status"] == "STORED" and item["sha256"] == call.sha256 and int(item["size"]) == call.size
    assert item["s3_key"].endswith(".mp3")


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("http://[127.0.0.1/rec.mp3", "provider returned a download link that cannot be parsed as a URL"),
        (
            "http://localhost:{port}/latest/meta-data/",
            "provider returned a download link to host 'localhost', which the source does not allow (download_hosts)",
        ),
    ],
)
def test_a_dypls_link_the_guard_refuses_ends_failed_with_the_reason_not_in_the_dead_letter_queue(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource], link: str, reason: str
) -> None:
    source, simulator = dypls(alibaba, "dypls-pool")
    call = simulator.place_call(duration_s=10, ready_after_s=0)
    queries_before = simulator.counters.get("action:QueryRecordFileDownloadUrl", 0)
    with Bystander() as elsewhere:
        # Given Dyplsapi answering with a link that is no URL, or that leads where the source
        # does not allow (its download_hosts name 127.0.0.1 only)
        simulator.set_fault("download_url", url=link.format(port=elsewhere.port))

        # When its recording receipt comes in
        batch = [simulator.secret_recording(call)]
        assert simulator.push_receipts(with_token(webhook_url(stack, source.source_id), source.token), batch).ok

        # Then the job ends FAILED at once (one link asked for) with the reason in the ledger,
        # and nothing was fetched
        [item] = archive.settled(source.source_id, call.call_id)
        assert item["status"] == "FAILED" and item["reason"] == reason
        assert simulator.counters["action:QueryRecordFileDownloadUrl"] == queries_before + 1
        assert elsewhere.requests == []
    assert stack.client("sqs").receive_message(QueueUrl=stack.state["dlq_url"]).get("Messages", []) == []


def test_a_dypls_call_past_the_retention_window_fails_explicitly(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source, simulator = dypls(alibaba, "dypls-pool")
    call = simulator.place_call(duration_s=10, ended_at=time.time() - 31 * 86400)
    queries_before = simulator.counters.get("action:QueryRecordFileDownloadUrl", 0)

    batch = [simulator.secret_recording(call)]
    assert simulator.push_receipts(with_token(webhook_url(stack, source.source_id), source.token), batch).ok

    [item] = archive.settled(source.source_id, call.call_id)
    assert item["status"] == "FAILED" and "keeps recordings only until" in item["reason"]
    assert simulator.counters.get("action:QueryRecordFileDownloadUrl", 0) == queries_before
