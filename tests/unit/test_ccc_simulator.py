"""Tests for the Alibaba Cloud Contact Center (CCC) simulator, over real HTTP: the 2017-07-05
recording actions (DownloadAllTypeRecording, DownloadRecording, ListRecordingsByContactId, their
quote-wrapped URLs and faults), the 2020-07-01 ones (GetMonoRecording, GetMultiChannelRecording,
event pushes) and ListCallDetailRecords in both versions (windows, paging, filters, refusals).

Requests are signed with the vendor's own signer (see tests/aliyun_requests.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from local.simulators.ccc import CccSimulator
from local.simulators.wav import wav_info
from tests.aliyun_requests import (
    CREDS,
    DAY,
    V2017,
    V2020,
    Receiver,
    all_files,
    rpc,
    sha256,
    unit_ccc,
    unquote_url,
    xml_error,
)


@pytest.fixture
def ccc() -> Iterator[CccSimulator]:
    with unit_ccc() as sim:
        yield sim


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# --------------------------------------------------------------------------- CCC 2017-07-05


def test_transferred_call_lists_every_file_with_quoted_urls_that_download_exact_bytes(ccc: CccSimulator) -> None:
    call = ccc.place_call(transferred_legs=1, duration_s=6)
    assert len(call.files) == 3  # one dual-track .mkv + one merged .wav per leg
    resp = all_files(ccc, call)
    assert resp.status_code == 200
    body = resp.json()
    assert (body["Code"], body["Success"], body["HttpStatusCode"]) == ("OK", True, 200)
    params = body["MediaDownloadParamList"]["MediaDownloadParam"]
    assert [p["FileName"] for p in params] == list(call.file_names)
    assert params[0]["FileName"].endswith(".mkv") and all(p["FileName"].endswith(".wav") for p in params[1:])
    for p, f in zip(params, call.files, strict=True):
        assert p["SignatureUrl"].startswith('""http://') and p["SignatureUrl"].endswith('""')
        url = unquote_url(p["SignatureUrl"])
        assert {"Expires", "OSSAccessKeyId", "Signature"} <= dict(parse_qsl(urlsplit(url).query)).keys()
        got = requests.get(url, timeout=10)
        assert got.status_code == 200
        assert sha256(got.content) == f.sha256 == sha256(ccc.file_bytes(f))
        assert int(got.headers["Content-Length"]) == f.size
        assert got.headers["ETag"].startswith('"')
        if f.kind == "dual_track":
            assert got.headers["Content-Type"] == "video/x-matroska"
            assert got.content[:4] == bytes.fromhex("1A45DFA3")  # EBML magic
        else:
            assert got.headers["Content-Type"] == "audio/x-wav"
            assert wav_info(got.content)[3] == pytest.approx(3.0)  # 6 s over two legs


def test_signature_url_expires_after_an_hour(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=2)
    url = unquote_url(all_files(ccc, call).json()["MediaDownloadParamList"]["MediaDownloadParam"][1]["SignatureUrl"])
    ccc.advance_time(3599)
    assert requests.get(url, timeout=5).status_code == 200
    ccc.advance_time(2)
    resp = requests.get(url, timeout=5)
    assert resp.status_code == 403
    assert resp.headers["Content-Type"] == "application/xml"
    err = xml_error(resp)
    assert (err["Code"], err["Message"]) == ("AccessDenied", "Request has expired.")
    assert {"RequestId", "HostId", "Expires", "ServerTime"} <= err.keys()
    assert ccc.oss.counters["expired"] == 1


def test_recording_is_not_exist_until_ready(ccc: CccSimulator) -> None:
    call = ccc.place_call(transferred_legs=2, duration_s=3, ready_after_s=120)
    for resp in (
        all_files(ccc, call),
        rpc(ccc, "DownloadRecording", V2017, InstanceId=ccc.instance_id, FileName=call.files[1].file_name),
    ):
        assert (resp.status_code, resp.json()["Code"]) == (404, "NotExist.Record")
    listed = rpc(ccc, "ListRecordingsByContactId", V2017, ContactId=call.contact_id, InstanceId=ccc.instance_id)
    assert listed.json()["Recordings"]["Recording"] == []
    ccc.advance_time(121)
    assert len(all_files(ccc, call).json()["MediaDownloadParamList"]["MediaDownloadParam"]) == 4
    one = rpc(ccc, "DownloadRecording", V2017, InstanceId=ccc.instance_id, FileName=call.files[2].file_name)
    param = one.json()["MediaDownloadParam"]
    assert param["FileName"] == call.files[2].file_name
    assert sha256(requests.get(unquote_url(param["SignatureUrl"]), timeout=5).content) == call.files[2].sha256
    listed = rpc(ccc, "ListRecordingsByContactId", V2017, ContactId=call.contact_id, InstanceId=ccc.instance_id)
    assert [r["FileName"] for r in listed.json()["Recordings"]["Recording"]] == list(call.file_names[1:])


def test_other_instance_and_oss_not_open() -> None:
    with CccSimulator(instance_id="inst-a", credentials=CREDS, not_ready_seconds=0, oss_open=False) as sim:
        call = sim.place_call(duration_s=2)
        other = rpc(sim, "DownloadAllTypeRecording", V2017, ContactId=call.contact_id, InstanceId="inst-b")
        assert (other.status_code, other.json()["Code"]) == (404, "NotExist.Instance")
        closed = all_files(sim, call)
        assert (closed.status_code, closed.json()["Code"]) == (404, "OssNotOpen")


@pytest.mark.parametrize(("style", "left"), [("typographic", "“”http"), ("ascii_single", '"http'), ("none", "http")])
def test_quote_styles(style: str, left: str) -> None:
    with CccSimulator(credentials=CREDS, not_ready_seconds=0, quote_style=style) as sim:
        call = sim.place_call(duration_s=2)
        wrapped = all_files(sim, call).json()["MediaDownloadParamList"]["MediaDownloadParam"][0]["SignatureUrl"]
        assert wrapped.startswith(left)
        assert requests.get(unquote_url(wrapped), timeout=5).status_code == 200


def test_ccc_gateway_faults(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=2)
    ccc.set_fault("throttle")
    resp = all_files(ccc, call)
    assert (resp.status_code, resp.json()["Code"]) == (400, "Throttling.User")
    ccc.set_fault("throttle", status=503)
    assert (all_files(ccc, call).status_code, all_files(ccc, call).status_code) == (503, 200)
    ccc.set_fault("error_5xx", status=502, action="DownloadAllTypeRecording")
    page = all_files(ccc, call)
    assert page.status_code == 502 and page.headers["Content-Type"] == "text/html"
    ccc.set_fault("expire_url")
    params = all_files(ccc, call).json()["MediaDownloadParamList"]["MediaDownloadParam"]
    first, second = (requests.get(unquote_url(p["SignatureUrl"]), timeout=5) for p in params)
    assert first.status_code == 403 and xml_error(first)["Message"] == "Request has expired."
    assert second.status_code == 200  # only the next URL issued was already expired
    counters = ccc.counters
    assert counters["fault:throttle"] == 2 and counters["fault:error_5xx"] == 1 and counters["fault:expire_url"] == 1
    assert counters["action:DownloadAllTypeRecording"] == 5
    assert ccc.faults_pending() == {}


# --------------------------------------------------------------------------- CCC 2020-07-01


def test_get_mono_and_multi_channel_recording(ccc: CccSimulator) -> None:
    call = ccc.place_call(transferred_legs=1, duration_s=5, contact_id="job-6538214103689000", ready_after_s=30)
    early = rpc(ccc, "GetMonoRecording", V2020, InstanceId=ccc.instance_id, ContactId=call.contact_id)
    assert (early.status_code, early.json()["Code"]) == (404, "NotExists.Recording")
    ccc.advance_time(31)

    mono = rpc(ccc, "GetMonoRecording", V2020, method="POST", InstanceId=ccc.instance_id, ContactId=call.contact_id)
    body = mono.json()
    assert (body["Code"], body["HttpStatusCode"], body["Message"]) == ("OK", 200, "无")
    assert body["Data"]["FileName"] == "job-6538214103689000.wav"
    assert body["Data"]["Duration"] == 5000
    got = requests.get(body["Data"]["FileUrl"], timeout=5)
    assert sha256(got.content) == call.mono.sha256 and wav_info(got.content)[1] == 1

    multi = rpc(ccc, "GetMultiChannelRecording", V2020, InstanceId=ccc.instance_id, ContactId=call.contact_id)
    data = multi.json()["Data"]
    assert data["FileName"].endswith(".mkv") and "Duration" not in data
    assert sha256(requests.get(data["FileUrl"], timeout=5).content) == call.multi_channel.sha256

    ccc.advance_time(DAY - 1)
    assert requests.get(data["FileUrl"], timeout=5).status_code == 200  # valid one day
    ccc.advance_time(2)
    assert requests.get(data["FileUrl"], timeout=5).status_code == 403

    short = rpc(
        ccc, "GetMonoRecording", V2020, InstanceId=ccc.instance_id, ContactId=call.contact_id, ExpireSeconds="300"
    )
    url = short.json()["Data"]["FileUrl"]
    ccc.advance_time(301)
    assert requests.get(url, timeout=5).status_code == 403


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"InstanceId": "ccc-unit"}, 400, "MissingContactId"),
        ({"InstanceId": "ccc-unit", "ContactId": " "}, 400, "Parameter.Blank"),
        ({"InstanceId": "other", "ContactId": "job-1"}, 404, "NotExists.InstanceId"),
        ({"InstanceId": "ccc-unit", "ContactId": "job-1", "ExpireSeconds": "0"}, 400, "Parameter.Minimum"),
    ],
)
def test_v2_errors(ccc: CccSimulator, params: dict[str, Any], status: int, code: str) -> None:
    resp = rpc(ccc, "GetMonoRecording", V2020, **params)
    assert (resp.status_code, resp.json()["Code"]) == (status, code)


def test_v2_not_ready_can_answer_ok_without_data() -> None:
    with CccSimulator(credentials=CREDS, not_ready_seconds=60, not_ready_style="empty") as sim:
        call = sim.place_call(duration_s=2)
        body = rpc(sim, "GetMultiChannelRecording", V2020, InstanceId=sim.instance_id, ContactId=call.contact_id)
        assert body.status_code == 200 and body.json()["Code"] == "OK" and body.json()["Data"] is None


def test_events_are_posted_like_the_subscription(ccc: CccSimulator, receiver: Receiver) -> None:
    call = ccc.place_call(duration_s=3)
    for event_type, f in (("RecordingReady", call.mono), ("DualTrackRecordingReady", call.multi_channel)):
        push = ccc.push_event(call, event_type, url=receiver.url, headers={"X-Webhook-Token": "t0k"})
        assert push.status == 200 and push.error is None
        event = receiver.bodies[-1]
        assert event["eventType"] == event_type
        assert (event["contactId"], event["instanceId"]) == (call.contact_id, ccc.instance_id)
        assert event["eventTime"].endswith("Z") and event["fileName"] == f.file_name
        assert sha256(requests.get(event["downloadURL"], timeout=5).content) == f.sha256
        assert receiver.headers[-1]["X-Webhook-Token"] == "t0k"
    ccc.push_event(call, "CDRReady", url=receiver.url)
    assert receiver.bodies[-1]["eventType"] == "CDRReady"
    assert [p.event_type for p in ccc.event_pushes] == ["RecordingReady", "DualTrackRecordingReady", "CDRReady"]
    soft = ccc.softphone_event(call)
    assert soft["contactId"] == call.contact_id and soft["instanceId"] == ccc.instance_id


# --------------------------------------------------------------------------- CCC ListCallDetailRecords

END_TIME = {V2017: "StopTime", V2020: "EndTime"}
BOTH = pytest.mark.parametrize("version", [V2017, V2020])


def ms(epoch_s: float) -> int:
    return int(epoch_s * 1000)


def list_cdrs(
    sim: CccSimulator, version: str, start_ms: int | None = None, end_ms: int | None = None, **params: Any
) -> requests.Response:
    """ListCallDetailRecords of ``sim``'s instance; page 1 of 100 unless ``PageNumber``/``PageSize`` say otherwise."""
    args = {"InstanceId": sim.instance_id, "PageNumber": "1", "PageSize": "100"}
    if start_ms is not None:
        args["StartTime"] = str(start_ms)
    if end_ms is not None:
        args[END_TIME[version]] = str(end_ms)
    return rpc(sim, "ListCallDetailRecords", version, **(args | params))


def listed(resp: requests.Response, version: str) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    records: list[dict[str, Any]] = (
        body["CallDetailRecords"]["List"]["CallDetailRecord"] if version == V2017 else body["Data"]["List"]
    )
    return records


def test_cdrs_2017_reply_lists_the_merged_legs_download_recording_accepts(ccc: CccSimulator) -> None:
    call = ccc.place_call(transferred_legs=1, duration_s=30, caller="13800000001", callee="057100000002")
    body = list_cdrs(ccc, V2017, ms(call.start) - 1000, ms(call.end)).json()
    assert (body["Code"], body["Success"], body["HttpStatusCode"]) == ("OK", True, 200) and body["RequestId"]
    page = body["CallDetailRecords"]
    assert (page["TotalCount"], page["PageNumber"], page["PageSize"]) == (1, 1, 100)
    (record,) = page["List"]["CallDetailRecord"]
    assert record["ContactId"] == call.contact_id and record["InstanceId"] == ccc.instance_id
    assert (record["StartTime"], record["Duration"]) == (ms(call.start), 30)
    assert (record["CallingNumber"], record["CalledNumber"]) == ("13800000001", "057100000002")
    assert (record["ContactType"], record["ContactDisposition"]) == (call.call_type, "Success")
    assert [a["AgentId"] for a in record["Agents"]["CallDetailAgent"]] == [call.agent_id]
    recordings = record["Recordings"]["Recording"]
    assert [r["FileName"] for r in recordings] == list(call.file_names[1:])  # the .wav legs, not the .mkv
    assert [r["StartTime"] for r in recordings] == [ms(call.start), ms(call.start + 15)]
    assert all(r["ContactId"] == call.contact_id and r["Duration"] == 15 for r in recordings)
    one = rpc(ccc, "DownloadRecording", V2017, InstanceId=ccc.instance_id, FileName=recordings[1]["FileName"])
    url = unquote_url(one.json()["MediaDownloadParam"]["SignatureUrl"])
    assert sha256(requests.get(url, timeout=5).content) == call.files[2].sha256


def test_cdrs_2020_reply_has_data_list_with_recording_ready(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=30, caller="13800000001", callee="057100000002")
    body = list_cdrs(ccc, V2020, ms(call.start), ms(call.end), method="POST").json()
    assert (body["Code"], body["HttpStatusCode"], body["Message"]) == ("OK", 200, "无") and body["RequestId"]
    data = body["Data"]
    assert (data["TotalCount"], data["PageNumber"], data["PageSize"]) == (1, 1, 100)
    (record,) = data["List"]  # a plain array in 2020-07-01, not {"CallDetailRecord": [...]}
    assert record["ContactId"] == call.contact_id and record["InstanceId"] == ccc.instance_id
    assert (record["StartTime"], record["ReleaseTime"]) == (ms(call.start), ms(call.end))
    assert record["CallDuration"] == "30"  # a string of seconds, as in the SDK models
    assert (record["RecordingDuration"], record["RecordingReady"]) == (30, True)
    assert (record["CallingNumber"], record["CalledNumber"]) == ("13800000001", "057100000002")
    assert (record["ContactType"], record["ContactDisposition"], record["AgentIds"]) == (
        "Inbound",
        "Success",
        call.agent_id,
    )


@BOTH
def test_cdrs_are_the_calls_started_inside_the_window_newest_first(ccc: CccSimulator, version: str) -> None:
    first = ccc.place_call(duration_s=10)
    ccc.advance_time(100)
    middle = ccc.place_call(duration_s=10)
    ccc.advance_time(100)
    last = ccc.place_call(duration_s=10)

    def ids(start_ms: int, end_ms: int) -> list[str]:
        return [r["ContactId"] for r in listed(list_cdrs(ccc, version, start_ms, end_ms), version)]

    everything = [last.contact_id, middle.contact_id, first.contact_id]
    assert ids(ms(first.start), ms(last.start)) == everything  # both ends inclusive
    assert ids(ms(middle.start), ms(middle.start)) == [middle.contact_id]
    assert ids(ms(first.start) + 1, ms(last.start) - 1) == [middle.contact_id]
    assert ids(ms(first.end), ms(middle.start) - 1) == []  # the end of a call does not count, its start does


@BOTH
def test_cdrs_page_through_five_calls_two_at_a_time(ccc: CccSimulator, version: str) -> None:
    calls = []
    for _ in range(5):
        calls.append(ccc.place_call(duration_s=5))
        ccc.advance_time(10)
    window = (ms(calls[0].start), ms(calls[-1].start))
    pages = [list_cdrs(ccc, version, *window, PageNumber=str(n), PageSize="2") for n in (1, 2, 3, 4)]
    assert [len(listed(p, version)) for p in pages] == [2, 2, 1, 0]
    seen = [r["ContactId"] for p in pages for r in listed(p, version)]
    assert seen == [c.contact_id for c in reversed(calls)]
    if version == V2017:
        totals = [p.json()["CallDetailRecords"]["TotalCount"] for p in pages]
        assert totals == [5, 5, 5, 5]
    else:  # documented: TotalCount is only filled on the first page
        totals = [p.json()["Data"]["TotalCount"] for p in pages]
        assert totals == [5, 0, 0, 0]
        assert [p.json()["Data"]["PageNumber"] for p in pages] == [1, 2, 3, 4]


@BOTH
@pytest.mark.parametrize(("name", "value"), [("PageSize", "101"), ("PageSize", "0"), ("PageNumber", "0")])
def test_cdr_page_size_and_number_outside_their_range_are_refused(
    ccc: CccSimulator, version: str, name: str, value: str
) -> None:
    call = ccc.place_call(duration_s=5)
    resp = list_cdrs(ccc, version, ms(call.start), ms(call.end), **{name: value})
    expected = "InvalidParameter" if version == V2017 else "Parameter.Invalid"
    assert (resp.status_code, resp.json()["Code"]) == (400, expected), resp.text
    assert resp.json()["HttpStatusCode"] == 400
    assert len(listed(list_cdrs(ccc, version, ms(call.start), ms(call.end), PageSize="100"), version)) == 1


def test_cdr_2017_window_of_more_than_seven_days_is_refused(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=5)
    week = ms(7 * DAY)
    assert len(listed(list_cdrs(ccc, V2017, ms(call.end) - week, ms(call.end)), V2017)) == 1
    resp = list_cdrs(ccc, V2017, ms(call.end) - week - 1, ms(call.end))
    body = resp.json()
    assert (resp.status_code, body["Code"], body["Success"]) == (400, "InvalidParameter", False)
    assert "7 days" in body["Message"]


@BOTH
@pytest.mark.parametrize("missing", ["InstanceId", "PageNumber", "PageSize"])
def test_cdr_required_parameters_are_required(ccc: CccSimulator, version: str, missing: str) -> None:
    params = {"InstanceId": ccc.instance_id, "PageNumber": "1", "PageSize": "10"}
    del params[missing]
    resp = rpc(ccc, "ListCallDetailRecords", version, **params)
    assert (resp.status_code, resp.json()["Code"]) == (400, f"Missing{missing}")


@BOTH
def test_cdr_other_instance_and_non_integer_times_are_refused(ccc: CccSimulator, version: str) -> None:
    other = list_cdrs(ccc, version, InstanceId="someone-else")
    expected = "NotExist.Instance" if version == V2017 else "NotExists.InstanceId"
    assert (other.status_code, other.json()["Code"]) == (404, expected)
    for name in ("StartTime", END_TIME[version], "PageSize"):
        resp = list_cdrs(ccc, version, **{name: "2024-05-01T00:00:00Z"})
        expected = f"Invalid{name}" if version == V2017 else "Parameter.Format"
        assert (resp.status_code, resp.json()["Code"]) == (400, expected), name
    assert list_cdrs(ccc, version, StartTime="1.7e12").status_code == 400


def test_unrecorded_call_is_listed_without_recordings_and_cannot_be_downloaded(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=20, recorded=False)
    ccc.advance_time(DAY)
    assert call.files == () and not call.recorded
    window = (ms(call.start), ms(call.end))
    (old,) = listed(list_cdrs(ccc, V2017, *window), V2017)
    assert old["ContactId"] == call.contact_id and old["Recordings"]["Recording"] == []
    (new,) = listed(list_cdrs(ccc, V2020, *window), V2020)
    assert new["ContactId"] == call.contact_id
    assert (new["RecordingReady"], new["RecordingDuration"], new["CallDuration"]) == (False, 0, "20")
    with_recording = list_cdrs(ccc, V2017, *window, WithRecording="true")
    assert listed(with_recording, V2017) == []

    assert (all_files(ccc, call).status_code, all_files(ccc, call).json()["Code"]) == (404, "NotExist.Record")
    by_contact = rpc(ccc, "ListRecordingsByContactId", V2017, ContactId=call.contact_id, InstanceId=ccc.instance_id)
    assert by_contact.json()["Recordings"]["Recording"] == []
    for action in ("GetMonoRecording", "GetMultiChannelRecording"):
        resp = rpc(ccc, action, V2020, InstanceId=ccc.instance_id, ContactId=call.contact_id)
        assert (resp.status_code, resp.json()["Code"]) == (404, "NotExists.Recording")
    with pytest.raises(ValueError, match="not recorded"):
        ccc.event_payload(call, "RecordingReady")


def test_recording_ready_turns_true_at_ready_at(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=10, ready_after_s=60)
    window = (ms(call.start), ms(call.end))

    def ready_2020() -> bool:
        (record,) = listed(list_cdrs(ccc, V2020, *window), V2020)
        return bool(record["RecordingReady"])

    def recordings_2017() -> list[str]:
        (record,) = listed(list_cdrs(ccc, V2017, *window), V2017)
        return [r["FileName"] for r in record["Recordings"]["Recording"]]

    assert (ready_2020(), recordings_2017()) == (False, [])
    ccc.advance_time(59)
    assert (ready_2020(), recordings_2017()) == (False, [])
    ccc.advance_time(1)
    assert (ready_2020(), recordings_2017()) == (True, list(call.file_names[1:]))


def test_cdrs_2020_filters_and_contact_id_overriding_them(ccc: CccSimulator) -> None:
    a = ccc.place_call(duration_s=5, caller="13811110000")
    ccc.advance_time(10)
    b = ccc.place_call(duration_s=5, caller="13822220000", call_type="OUTBOUND")
    window = (ms(a.start), ms(b.start))

    def ids(**params: str) -> list[str]:
        return [r["ContactId"] for r in listed(list_cdrs(ccc, V2020, *window, **params), V2020)]

    assert ids() == [b.contact_id, a.contact_id]
    assert ids(SortOrder="ASC") == [a.contact_id, b.contact_id]
    assert ids(CallingNumber="13811110000") == [a.contact_id]
    assert ids(ContactType="Outbound") == [b.contact_id]
    assert ids(Criteria=json.dumps({"phoneNumber": "2222"})) == [b.contact_id]
    # A ContactId ignores every other filter, the window included.
    outside = list_cdrs(ccc, V2020, 0, 1, ContactId=a.contact_id, CallingNumber="nobody")
    assert [r["ContactId"] for r in listed(outside, V2020)] == [a.contact_id]


def test_cdr_window_defaults_to_today_in_utc8_until_now() -> None:
    t0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC, i.e. 06:13:20 on the 15th in Beijing
    with CccSimulator(instance_id="ccc-unit", credentials=CREDS, not_ready_seconds=0, clock=lambda: t0) as sim:
        call = sim.place_call(duration_s=30)
        for version in (V2017, V2020):
            assert [r["ContactId"] for r in listed(list_cdrs(sim, version), version)] == [call.contact_id]
        sim.advance_time(18 * 3600)  # 00:13:20 on the 16th in Beijing: yesterday's call is out of today
        for version in (V2017, V2020):
            assert listed(list_cdrs(sim, version), version) == []
            assert len(listed(list_cdrs(sim, version, ms(call.start), ms(sim.now())), version)) == 1
