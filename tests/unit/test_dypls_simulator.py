"""Tests for the Dyplsapi (phone-number privacy) simulator, over real HTTP: QueryRecordFileDownloadUrl
and its business errors (which come with HTTP 200), receipt records, their push and resend schedule,
and a request log that keeps no secrets.

Requests are signed with the vendor's own signer (see tests/aliyun_requests.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from local.simulators.dypls import DyplsCall, DyplsSimulator
from tests.aliyun_requests import CREDS, DAY, VDYPLS, Receiver, frozen_clock, rpc, sha256, xml_error


@pytest.fixture
def dypls() -> Iterator[DyplsSimulator]:
    with DyplsSimulator(credentials=CREDS, pool_keys={"FC123456"}, not_ready_seconds=0, clock=frozen_clock()) as sim:
        yield sim


def query_dypls(sim: DyplsSimulator, call: DyplsCall, **overrides: str) -> dict[str, Any]:
    params: dict[str, Any] = {"CallId": call.call_id, "CallTime": call.call_time_text, "PoolKey": call.pool_key}
    params.update(overrides)
    resp = rpc(sim, "QueryRecordFileDownloadUrl", VDYPLS, **params)
    assert resp.status_code == 200, resp.text  # Dyplsapi's business errors come with HTTP 200
    body: dict[str, Any] = resp.json()
    return body


# --------------------------------------------------------------------------- Dyplsapi


def test_query_record_file_download_url(dypls: DyplsSimulator) -> None:
    call = dypls.place_call(duration_s=60)
    body = query_dypls(dypls, call, ProductType="AXB_170")
    assert (body["Code"], body["Message"]) == ("OK", "OK") and body["RequestId"]
    resp = requests.get(body["DownloadUrl"], timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "audio/mpeg"
    assert sha256(resp.content) == call.sha256 and resp.content[:2] == b"\xff\xf3"  # an MPEG audio frame
    assert 200_000 < call.size < 300_000  # a minute of telephone-quality MP3
    dypls.advance_time(7201)  # valid two hours
    assert xml_error(requests.get(body["DownloadUrl"], timeout=5))["Message"] == "Request has expired."


def test_dypls_business_errors_come_with_http_200(dypls: DyplsSimulator) -> None:
    call = dypls.place_call(duration_s=10)
    dypls.set_fault("flow_limit")
    assert query_dypls(dypls, call)["Code"] == "isv.FLOW_LIMIT"
    assert query_dypls(dypls, call)["Code"] == "OK"
    dypls.set_fault("system_error")
    assert query_dypls(dypls, call)["Code"] == "isp.SYSTEM_ERROR"
    dypls.set_fault("business_error", code="isp.GATEWAY_ERROR")
    assert query_dypls(dypls, call)["Code"] == "isp.GATEWAY_ERROR"
    assert query_dypls(dypls, call, PoolKey="FC999999")["Code"] == "isv.POOLKEY_NOT_EXISTS"
    utc_time = dt.datetime.fromtimestamp(call.call_time / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert query_dypls(dypls, call, CallTime=utc_time)["Code"] == "isv.INVALID_PARAMETERS"  # not Beijing time
    assert query_dypls(dypls, call, CallTime=str(call.call_time))["Code"] == "isv.INVALID_PARAMETERS"
    assert query_dypls(dypls, call, CallId="0" * 16)["Code"] == "isv.RECORD_NOT_EXIST"
    assert dypls.counters["error:isv.FLOW_LIMIT"] == 1
    missing = rpc(dypls, "QueryRecordFileDownloadUrl", VDYPLS, PoolKey="FC123456")
    assert (missing.status_code, missing.json()["Code"]) == (400, "MissingCallId")


def test_dypls_can_answer_with_a_download_url_a_client_must_not_trust(dypls: DyplsSimulator) -> None:
    call = dypls.place_call(duration_s=10)
    dypls.set_fault("download_url", url="http://169.254.169.254/latest/meta-data/")
    assert query_dypls(dypls, call)["DownloadUrl"] == "http://169.254.169.254/latest/meta-data/"
    assert query_dypls(dypls, call)["DownloadUrl"].startswith(dypls.oss.base_url)


def test_dypls_not_ready_unrecorded_and_too_old(dypls: DyplsSimulator) -> None:
    fresh = dypls.place_call(duration_s=5, ready_after_s=900)
    body = query_dypls(dypls, fresh)
    assert body["Code"] == "isv.RECORD_NOT_EXIST" and "DownloadUrl" not in body
    silent = dypls.place_call(duration_s=5, recorded=False)
    old = dypls.place_call(duration_s=5, ended_at=dypls.now() - 31 * DAY)
    dypls.advance_time(901)
    assert query_dypls(dypls, fresh)["Code"] == "OK"
    assert query_dypls(dypls, silent)["Code"] == "isv.RECORD_NOT_EXIST"
    expired = query_dypls(dypls, old)
    assert expired["Code"] == "isv.RECORD_NOT_EXIST" and expired["Message"] == "录音文件已过期"


def test_receipt_records(dypls: DyplsSimulator) -> None:
    call = dypls.place_call(duration_s=30, ready_after_s=600)
    report = dypls.secret_report(call)
    assert {"pool_key", "sub_id", "call_id", "phone_no", "secret_no", "peer_no", "call_type", "call_time"} <= set(
        report
    )
    assert {"start_time", "release_time", "release_dir", "release_cause", "record_url"} <= set(report)
    assert report["call_time"] == call.call_time_text
    assert requests.get(report["record_url"], timeout=5).status_code == 404  # handed out before the file exists
    dypls.advance_time(601)
    assert sha256(requests.get(report["record_url"], timeout=5).content) == call.sha256
    http_rec, mns_rec = dypls.secret_recording(call), dypls.secret_recording(call, "mns")
    assert http_rec == {
        "pool_key": call.pool_key,
        "sub_id": call.sub_id,
        "call_id": call.call_id,
        "call_time": call.call_time,
        "out_id": call.out_id,
    }
    assert "subs_id" in mns_rec and "sub_id" not in mns_rec
    assert isinstance(http_rec["call_time"], int) and http_rec["call_time"] % 1000 == 0


def test_receipts_are_pushed_as_a_json_array_and_resent_until_acknowledged(dypls: DyplsSimulator) -> None:
    slow_ok = (200, '{"code":0,"msg":"接收成功"}'.encode(), 0.9)
    receiver = Receiver([(500, b"oops", 0.0), slow_ok, (200, b"<html>ok</html>", 0.0)])
    try:
        call = dypls.place_call(duration_s=10)
        records = [dypls.secret_report(call), dypls.secret_recording(call)]
        first = dypls.push_receipts(receiver.url, records)
        assert (first.attempt, first.status, first.ok) == (1, 500, False)
        assert receiver.bodies[0] == records  # one POST, a JSON array of records
        assert dypls.deliver_due_resends() == []  # due one minute later
        dypls.advance_time(60)
        (second,) = dypls.deliver_due_resends()
        # Too slow: the platform stops waiting after 700 ms (and the receiver takes 900).
        assert (second.attempt, second.status, second.ok) == (2, None, False)
        assert second.latency_ms >= 700 and "timed out" in (second.error or "")
        dypls.advance_time(300)
        (third,) = dypls.deliver_due_resends()
        assert (third.status, third.ok) == (200, False)  # no numeric "code" in the answer
        dypls.advance_time(599)
        assert dypls.deliver_due_resends() == []
        dypls.advance_time(1)
        (fourth,) = dypls.deliver_due_resends()
        assert (fourth.attempt, fourth.ok) == (4, True)
        assert receiver.bodies == [records] * 4 and dypls.pending_resends == {}
        assert [a.attempt for a in dypls.receipt_attempts] == [1, 2, 3, 4]
        assert all(a.latency_ms > 0 for a in dypls.receipt_attempts)
    finally:
        receiver.close()


def test_receipts_are_dropped_after_three_resends(dypls: DyplsSimulator) -> None:
    receiver = Receiver([(503, b"", 0.0)] * 10)
    try:
        call = dypls.place_call(duration_s=5)
        dypls.push_receipts(receiver.url, [dypls.secret_recording(call)])
        for wait in (60, 300, 600):
            dypls.advance_time(wait)
            dypls.deliver_due_resends()
        assert len(receiver.bodies) == 4 and dypls.pending_resends == {}
        assert dypls.counters["receipts_dropped"] == 1
    finally:
        receiver.close()


def test_request_log_keeps_no_secrets() -> None:
    # An access key of this test alone: the simulator's port is a freed ephemeral port, which any
    # process on the machine may still address (with the shared KEY_ID, too), so the log is
    # read for this key only.
    key_id, secret = f"LTAI{uuid.uuid4().hex}", f"secret-{uuid.uuid4().hex}"
    with DyplsSimulator(credentials={key_id: secret}, pool_keys={"FC123456"}, not_ready_seconds=0) as sim:
        call = sim.place_call(duration_s=5)
        params = {"CallId": call.call_id, "CallTime": call.call_time_text, "PoolKey": call.pool_key}
        reply = rpc(sim, "QueryRecordFileDownloadUrl", VDYPLS, key_id=key_id, secret=secret, **params)
        (entry,) = [e for e in sim.request_log if e.access_key_id == key_id]
    assert reply.json()["Code"] == "OK"
    assert entry.action == "QueryRecordFileDownloadUrl" and entry.status == 200 and entry.code == "OK"
    assert all(name not in ("Signature", "SecurityToken") for name, _ in entry.params)
    assert secret not in repr(entry)
