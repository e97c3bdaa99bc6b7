"""How CCC events and Dypls receipts become fetch jobs (no provider call in the webhook)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from callvault.errors import BadRequest, ConfigError
from callvault.providers.ccc import PROVIDER as CCC
from callvault.providers.dypls import PROVIDER as DYPLS
from callvault.providers.interface import InboundRequest, Source
from callvault.sources import parse_source
from tests.conftest import ccc_source_document, dypls_source_document, sample_event

CCC_2017 = parse_source(ccc_source_document())
CCC_2020 = parse_source(ccc_source_document("2020-07-01"))
POOL = parse_source(dypls_source_document())


def request_with(source: Source, body: Any) -> InboundRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return InboundRequest(source_id=source.id, body=raw, headers={}, query={}, source_ip="127.0.0.1")


def test_a_forwarded_softphone_event_asks_for_every_file_of_the_contact() -> None:
    reply = CCC.parse_webhook(CCC_2017, request_with(CCC_2017, sample_event("ccc/softphone-call-ended.json")))

    [job] = reply.jobs
    assert job.call_id == "1272014011" and not job.names_a_file
    assert job.locator == {"contact_id": "1272014011"}
    assert job.call_time == "2019-07-08T11:27:22+08:00"  # epoch ms from the SDK, in the source's zone


def test_a_forwarded_event_with_a_file_name_asks_for_that_file() -> None:
    event = sample_event("ccc/softphone-recording-file.json")

    [job] = CCC.parse_webhook(CCC_2017, request_with(CCC_2017, event)).jobs

    assert job.file_name == "153128491143400080327683.wav" and job.names_a_file
    assert job.locator["file_name"] == "153128491143400080327683.wav"


def test_2020_recording_events_select_mono_or_multichannel_and_others_are_skipped() -> None:
    events = [
        sample_event("ccc/recording-ready-2020.json"),
        sample_event("ccc/dual-track-recording-ready-2020.json"),
        {"eventType": "CDRReady", "contactId": "job-1", "instanceId": "ccc-test"},
    ]

    reply = CCC.parse_webhook(CCC_2020, request_with(CCC_2020, events))

    assert [(job.file_name, job.locator["recording"]) for job in reply.jobs] == [
        ("*mono", "mono"),
        ("*multichannel", "multichannel"),
    ]
    assert reply.skipped == 1


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"instanceId": "9cfad875-6260-4a53-ab6e-b13e3fb31f7d"}, "no contactId"),
        ({"contactId": "1", "instanceId": "other"}, "is for instance 'other'"),
        ({"contactId": "1", "eventType": "RecordingReady"}, "2020-07-01 event"),
        ({"contactId": "1", "callTime": "yesterday"}, "neither epoch milliseconds nor ISO 8601"),
    ],
)
def test_bad_ccc_events_are_rejected_with_a_reason(event: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        CCC.parse_webhook(CCC_2017, request_with(CCC_2017, event))


def test_a_dypls_batch_fetches_receipts_expects_answered_calls_and_notes_unanswered_ones() -> None:
    reply = DYPLS.parse_webhook(POOL, request_with(POOL, sample_event("dypls/receipts-mixed.json")))

    assert reply.body == {"code": 0, "msg": "接收成功"}
    receipt, report, mns_receipt, unanswered, last_receipt = reply.jobs
    assert [job.call_id for job in (receipt, mns_receipt, last_receipt)] == [
        "66647243838006067251551752068865",
        "77747243838006067251551752069999",
        "99947243838006067251551752071111",
    ]
    assert reply.skipped == 0
    assert receipt.locator == {
        "call_id": "66647243838006067251551752068865",
        "call_time": "2019-03-05 10:14:28",  # epoch ms → Beijing wall-clock, as the API wants it
        "pool_key": "FC123456",
    }
    assert receipt.give_up_at == "2019-04-04T10:14:28+08:00"  # 30 days of retention
    assert receipt.recording_confirmed and receipt.not_before is None and receipt.no_recording is None
    assert mns_receipt.details == {"subs_id": "1000000820257626", "out_id": "order-4712"}  # MNS spelling
    # The answered call's report: its recording is expected (the receipt may get lost).
    assert report.call_id == receipt.call_id and report.locator == receipt.locator
    assert report.not_before is not None and not report.recording_confirmed
    # A call that was never answered has no recording to wait for.
    assert unanswered.no_recording == "the call was not answered (no start_time): no recording"


def test_dypls_pools_that_record_nothing_skip_call_reports() -> None:
    source = parse_source(dypls_source_document(dypls={**dypls_source_document()["dypls"], "records_calls": False}))

    reply = DYPLS.parse_webhook(source, request_with(source, sample_event("dypls/receipts-mixed.json")))

    assert len(reply.jobs) == 3 and reply.skipped == 2


def test_dypls_call_reports_can_be_enqueued_for_pools_without_recording_receipts() -> None:
    source = parse_source(
        dypls_source_document(dypls={**dypls_source_document()["dypls"], "enqueue_call_reports": True})
    )

    reply = DYPLS.parse_webhook(source, request_with(source, sample_event("dypls/receipts-mixed.json")))

    assert len(reply.jobs) == 5 and reply.skipped == 0
    assert reply.jobs[1].locator["call_time"] == "2019-03-05 10:14:28"
    assert reply.jobs[1].not_before is None and not reply.jobs[1].recording_confirmed  # fetched at once


def test_one_bad_dypls_record_does_not_hold_back_the_good_ones() -> None:
    records = [{"pool_key": "FC123456", "call_time": 1551752068000}, sample_event("dypls/receipts-mixed.json")[0]]

    reply = DYPLS.parse_webhook(POOL, request_with(POOL, records))

    assert len(reply.jobs) == 1 and reply.skipped == 0
    assert reply.rejected == ["record 0: record has no call_id"]
    assert reply.body == {"code": 0, "msg": "接收成功", "rejected": ["record 0: record has no call_id"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        ("receipts", "JSON array"),
        ([{"pool_key": "FC123456", "call_time": 1}], "no call_id"),
        ([{"call_id": "1", "pool_key": "OTHER", "call_time": 1}], "is for pool 'OTHER'"),
        ([{"call_id": "1", "pool_key": "FC123456", "call_time": "03/05/2019"}], "call_time"),
    ],
)
def test_unusable_dypls_pushes_are_rejected(body: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        DYPLS.parse_webhook(POOL, request_with(POOL, body))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (ccc_source_document(ccc={"api_version": "2019-01-01"}), "api_version"),
        (ccc_source_document(ccc={"instance_id": "x", "access_key_id": "a"}), "access_key_secret"),
        (
            ccc_source_document(ccc={**ccc_source_document()["ccc"], "endpoint": "ccc.example.com"}),
            "endpoint must look like",
        ),
        (dypls_source_document(dypls={"access_key_id": "a", "access_key_secret": "b", "pool": "x"}), "unknown fields"),
    ],
)
def test_bad_alibaba_sources_name_the_field(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_source(document)
