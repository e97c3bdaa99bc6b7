"""How PBX event reports become fetch jobs (parsed leniently, as real firmware sends them)."""

from __future__ import annotations

import json

import pytest

from callvault.errors import BadRequest
from callvault.providers.interface import InboundRequest
from callvault.providers.pbx import PROVIDER
from callvault.sources import parse_source
from tests.conftest import pbx_source_document, sample_event

SOURCE = parse_source(pbx_source_document())


def request_with(body: object) -> InboundRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return InboundRequest(source_id=SOURCE.id, body=raw, headers={}, query={}, source_ip="127.0.0.1")


def test_newcdr_with_recording_becomes_one_job_in_the_pbx_time_zone() -> None:
    reply = PROVIDER.parse_webhook(SOURCE, request_with(sample_event("pbx/newcdr.json")))

    assert reply.body == {"status": "Success"}
    [job] = reply.jobs
    assert job.call_id == "1588641695.1772"
    assert job.file_name == "exten-101-106-20200505-042135-1588641695.1772.wav"
    assert job.locator == {"recording": "exten-101-106-20200505-042135-1588641695.1772.wav"}
    assert job.call_time == "2020-05-05T04:21:35+08:00"
    assert job.details["callfrom"] == "101"


def test_v2_reports_name_the_event_in_event_instead_of_action() -> None:
    reply = PROVIDER.parse_webhook(SOURCE, request_with(sample_event("pbx/newcdr-v2-event.json")))

    assert [job.call_id for job in reply.jobs] == ["1588642001.1780"]


def test_calls_without_recording_and_other_events_are_acknowledged_and_skipped() -> None:
    for name in ("pbx/newcdr-not-recorded.json", "pbx/extension-status.json"):
        reply = PROVIDER.parse_webhook(SOURCE, request_with(sample_event(name)))
        assert reply.jobs == [] and reply.skipped == 1 and reply.status_code == 200


def test_whole_numbers_instead_of_strings_are_tolerated() -> None:
    report = sample_event("pbx/newcdr.json") | {"callid": 1588641695, "callduraction": 125}

    [job] = PROVIDER.parse_webhook(SOURCE, request_with(report)).jobs

    assert job.call_id == "1588641695" and job.details["callduraction"] == "125"


def test_a_call_id_sent_as_a_float_is_refused_rather_than_rounded() -> None:
    # 1588641695.1770 arrives as 1588641695.177: another call's id, or one no CDR row names.
    report = sample_event("pbx/newcdr.json") | {"callid": 1588641695.1770}

    with pytest.raises(BadRequest, match="an id cannot be a float"):
        PROVIDER.parse_webhook(SOURCE, request_with(report))


def test_a_recording_reported_with_a_path_is_filed_under_its_file_name() -> None:
    report = sample_event("pbx/newcdr.json") | {"recording": "2020/05/05/exten-101.wav"}

    [job] = PROVIDER.parse_webhook(SOURCE, request_with(report)).jobs

    assert job.file_name == "exten-101.wav"
    assert job.locator["recording"] == "2020/05/05/exten-101.wav"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        ([], "JSON object"),
        ("NewCdr", "JSON object"),
        ({"callid": "1"}, "neither 'action' nor 'event'"),
        ({"action": "NewCdr", "recording": "x.wav"}, "no callid"),
        ({"action": "NewCdr", "callid": "1", "recording": "x.wav", "timestart": "05/05/2020"}, "timestart"),
        ({"action": "NewCdr", "callid": "1", "recording": "/"}, "recording name"),
    ],
)
def test_malformed_reports_are_rejected_with_a_reason(body: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        PROVIDER.parse_webhook(SOURCE, request_with(body))
