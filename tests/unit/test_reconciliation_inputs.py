"""What reconciliation reads and accepts: a PBX's CDR CSV by its header, the reconcile: settings
of a source, backfill requests, and the jobs of calls nothing confirmed were recorded."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callvault.config import RetrySettings
from callvault.errors import ConfigError, PermanentFailure, RetryKind, RetryLater
from callvault.models import FetchJob, InvalidJob
from callvault.providers.interface import ReconcileSettings, TimeWindow
from callvault.providers.pbx import PROVIDER as PBX
from callvault.providers.pbx import job_from_cdr, listing_from_cdr
from callvault.providers.pbx.cdr import parse_cdr_csv
from callvault.reconciliation import ReconcileRefused, backfill_request, reconcile_window
from callvault.retry_policy import plan_retry
from callvault.sources import parse_source
from callvault.timefmt import format_duration, parse_duration
from tests.conftest import ccc_source_document, dypls_source_document, pbx_source_document, sample_event

SOURCE = parse_source(pbx_source_document())
HEADER = "callid,timestart,callfrom,callto,callduraction,talkduraction,status,type,recording,sn"
ROW = "1588641695.1772,2020-05-05 04:21:35,101,106,65,60,ANSWERED,Internal,exten-101-106-1588641695.1772.wav,36"
WINDOW = TimeWindow(
    start=datetime(2020, 5, 4, tzinfo=UTC),
    end=datetime(2020, 5, 6, tzinfo=UTC),
    settled_before=datetime(2020, 5, 6, tzinfo=UTC),
)


def csv(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


# -- the CDR CSV -------------------------------------------------------------------------


def test_a_cdr_row_makes_the_same_job_as_the_calls_newcdr_report() -> None:
    [from_csv] = listing_from_cdr(SOURCE, csv(HEADER, ROW), WINDOW).jobs
    report = dict(sample_event("pbx/newcdr.json"), recording="exten-101-106-1588641695.1772.wav")
    from_push = job_from_cdr(SOURCE, report)

    assert from_push is not None
    assert (from_csv.identity, from_csv.call_time, from_csv.locator) == (
        from_push.identity,
        from_push.call_time,
        from_push.locator,
    )


def test_headers_are_matched_by_name_whatever_their_order_case_spacing_or_bom() -> None:
    data = (
        "\ufeffRecording File, Start Time ,CALL_ID,Queue\r\nexten-1.wav,2020-05-05 04:21:35,1588641695.1772,sales\r\n"
    ).encode()

    table = parse_cdr_csv(data)

    assert table.rows == [
        (2, {"recording": "exten-1.wav", "timestart": "2020-05-05 04:21:35", "callid": "1588641695.1772"})
    ]
    assert table.problems == []


@pytest.mark.parametrize(
    ("data", "missing"),
    [
        (csv("callid,timestart,status", "1.1,2020-05-05 04:21:35,ANSWERED"), "no recording column"),
        (csv("timestart,recording", "2020-05-05 04:21:35,a.wav"), "no callid column"),
        (csv("callid,recording", "1.1,a.wav"), "no timestart column"),
        (
            b"\x00\x01garbage without a header line",
            r"no callid or recording or timestart column \(columns: \?\?garbage",
        ),
    ],
)
def test_a_csv_that_cannot_say_which_calls_were_recorded_is_refused_with_its_columns(data: bytes, missing: str) -> None:
    with pytest.raises(PermanentFailure, match=missing):
        parse_cdr_csv(data)


def test_a_truncated_last_line_and_unreadable_rows_are_reported_not_raised() -> None:
    data = csv(HEADER, ROW, "1588641700.1773,2020-05-05 04:30:00,101,106,65,60,ANSWERED,Internal,b.wav,36") + b"15886"

    table = parse_cdr_csv(data)

    assert [line for line, _ in table.rows] == [2, 3]
    assert table.problems == ["line 4: 1 of 10 columns (a truncated line?); skipped"]


def test_an_empty_export_has_no_calls_and_a_gb18030_one_is_still_read() -> None:
    assert parse_cdr_csv(b"").rows == []
    data = "callid,timestart,recording,srctrunkname\r\n1.1,2020-05-05 04:21:35,a.wav,中继一\r\n".encode("gb18030")
    [(_, row)] = parse_cdr_csv(data).rows
    assert row["srctrunkname"] == "中继一"


def test_unrecorded_calls_are_skipped_recent_ones_deferred_and_bad_rows_reported() -> None:
    data = csv(
        HEADER,
        ROW,
        "1588641701.1774,2020-05-05 04:40:00,101,106,20,0,NO ANSWER,Internal,,36",  # not recorded
        "1588641702.1775,2020-05-05 23:59:00,101,106,3600,3590,ANSWERED,Internal,late.wav,36",  # ends after
        "1588641703.1776,yesterday,101,106,10,5,ANSWERED,Internal,odd.wav,36",
    )
    settled = datetime(2020, 5, 5, 16, 0, tzinfo=UTC)  # 00:00 the next day in Shanghai

    listing = listing_from_cdr(SOURCE, data, dataclasses.replace(WINDOW, settled_before=settled))

    assert [job.call_id for job in listing.jobs] == ["1588641695.1772"]
    assert (listing.calls, listing.deferred) == (4, 1)
    assert listing.problems == ["line 5: NewCdr timestart 'yesterday' is not 'yyyy-mm-dd hh:mm:ss'; skipped"]
    assert listing.audit == data


# -- settings ----------------------------------------------------------------------------


def test_each_provider_brings_its_own_reconcile_defaults() -> None:
    pbx, ccc, dypls = (parse_source(doc()) for doc in (pbx_source_document, ccc_source_document, dypls_source_document))

    assert pbx.reconcile == PBX.reconcile_defaults == ReconcileSettings(wait_for_push=timedelta(minutes=10))
    assert ccc.reconcile.wait_for_push == timedelta(minutes=30)
    assert (dypls.reconcile.interval, dypls.reconcile.wait_for_push) == (timedelta(minutes=5), timedelta(minutes=30))


def test_reconcile_settings_read_durations_over_the_defaults() -> None:
    source = parse_source(pbx_source_document(reconcile={"interval": "1h", "overlap": 600, "first_lookback": "2d"}))

    assert source.reconcile == ReconcileSettings(
        interval=timedelta(hours=1),
        wait_for_push=timedelta(minutes=10),
        overlap=timedelta(minutes=10),
        first_lookback=timedelta(days=2),
    )


@pytest.mark.parametrize(
    ("reconcile", "message"),
    [
        ({"interval": "soon"}, "reconcile.interval: 'soon' is not a duration"),
        ({"interval": "0s"}, "reconcile.interval must be from"),
        ({"overlap": "8d"}, "reconcile.overlap must be from"),
        ({"enabled": "yes"}, "reconcile.enabled must be true or false"),
        ({"every": "1h"}, "reconcile has unknown fields every"),
        ("15m", "reconcile must be a mapping"),
    ],
)
def test_bad_reconcile_settings_name_the_field(reconcile: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_source(pbx_source_document(reconcile=reconcile))


def test_reconcile_recordings_is_a_2020_setting_of_known_kinds() -> None:
    ccc_2020 = ccc_source_document("2020-07-01")
    source = parse_source(dict(ccc_2020, ccc={**ccc_2020["ccc"], "reconcile_recordings": ["multichannel", "mono"]}))
    assert source.settings.reconcile_recordings == ("multichannel", "mono")
    with pytest.raises(ConfigError, match="must list some of mono, multichannel"):
        parse_source(dict(ccc_2020, ccc={**ccc_2020["ccc"], "reconcile_recordings": ["stereo"]}))
    ccc_2017 = ccc_source_document()
    with pytest.raises(ConfigError, match="applies to api_version 2020-07-01 only"):
        parse_source(dict(ccc_2017, ccc={**ccc_2017["ccc"], "reconcile_recordings": ["mono"]}))


@pytest.mark.parametrize(("text", "seconds"), [(90, 90), ("90s", 90), ("15m", 900), (" 2h ", 7200), ("1d", 86400)])
def test_durations_read_back_as_written(text: Any, seconds: int) -> None:
    span = parse_duration(text)
    assert span == timedelta(seconds=seconds)
    assert parse_duration(format_duration(span)) == span


# -- requests and jobs -------------------------------------------------------------------


def test_a_backfill_request_names_a_source_and_a_range_or_nothing() -> None:
    assert backfill_request({"source_id": "office-pbx"}) == ("office-pbx", None, None)
    source_id, start, end = backfill_request({"source_id": "s", "from": "2026-12-01", "to": "2026-12-02T00:00:00"})
    assert (source_id, start, end) == ("s", datetime(2026, 12, 1), datetime(2026, 12, 2))


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"source_id": "s", "from": "2026-12-01"}, "a reconcile request is"),
        ({"source_id": "s", "from": "2026-12-02", "to": "2026-12-01"}, "from must be before to"),
        ({"source_id": "s", "from": "2026-01-01", "to": "2026-03-01"}, "at most 31 days apart"),
        ({"source_id": "s", "from": "2026-12-01", "to": "2026-12-02T00:00:00+08:00"}, "both give a UTC offset"),
        ({"source_id": "s", "from": "tuesday", "to": "2026-12-02"}, "not an ISO 8601 time"),
        ({"source_id": "s", "from": "9999-12-30", "to": "9999-12-31"}, "fall in the years 2000 to 2100"),
        ({"source_id": 7}, "source_id must be"),
        ([], "a reconcile request is"),
    ],
)
def test_bad_backfill_requests_are_refused_with_a_reason(request_: Any, message: str) -> None:
    with pytest.raises(ReconcileRefused, match=message):
        backfill_request(request_)


def unconfirmed(attempt: int) -> FetchJob:
    return FetchJob(
        source_id="pool",
        provider="dypls",
        call_id="c1",
        call_time="2026-12-01T10:00:00+08:00",
        locator={"call_id": "c1"},
        attempt=attempt,
        recording_confirmed=False,
    )


def test_a_call_nothing_confirmed_was_recorded_ends_no_recording_when_the_provider_never_has_it() -> None:
    policy, now = RetrySettings(max_attempts=3), datetime(2026, 12, 1, tzinfo=UTC)
    not_ready = RetryLater(RetryKind.NOT_READY, "isv.RECORD_NOT_EXIST")

    assert not plan_retry(unconfirmed(1), not_ready, policy, now).give_up
    last = plan_retry(unconfirmed(3), not_ready, policy, now)
    assert last.give_up and last.no_recording
    # An outage or a confirmed recording that never appears is a failure, not an absence.
    assert not plan_retry(unconfirmed(3), RetryLater(RetryKind.PROVIDER_UNAVAILABLE, "503"), policy, now).no_recording
    confirmed = dataclasses.replace(unconfirmed(3), recording_confirmed=True)
    assert not plan_retry(confirmed, not_ready, policy, now).no_recording


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"origin": "cron"}, "origin must be one of"),
        ({"origin": {"a": 1}}, "origin must be one of"),
        ({"recording_confirmed": "no"}, "recording_confirmed must be true or false"),
        ({"not_before": "soon"}, "not_before is not ISO 8601"),
        ({"no_recording": 1}, "no_recording must be a string"),
        ({"details": {"a": 1}}, "details must map strings to strings"),
        ({"call_id": {"a": 1}}, "call_id must be a string"),
    ],
)
def test_jobs_with_ill_typed_new_fields_are_invalid(change: dict[str, Any], message: str) -> None:
    raw = unconfirmed(1).to_dict() | change
    with pytest.raises(InvalidJob, match=message):
        FetchJob.from_dict(raw)


# -- windows -----------------------------------------------------------------------------

SETTINGS = ReconcileSettings(wait_for_push=timedelta(minutes=10), overlap=timedelta(hours=2))
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_the_first_run_reads_back_to_its_lookback_and_later_runs_overlap_the_checkpoint() -> None:
    first = reconcile_window(SETTINGS, NOW, None)
    later = reconcile_window(SETTINGS, NOW, checkpoint=NOW - timedelta(minutes=25))

    assert first == TimeWindow(NOW - timedelta(days=1), NOW - timedelta(minutes=10), NOW - timedelta(minutes=10))
    assert later is not None
    assert (later.start, later.end) == (NOW - timedelta(hours=2, minutes=25), NOW - timedelta(minutes=10))


def test_after_a_long_outage_the_backlog_is_read_a_day_per_run_and_each_run_moves_on() -> None:
    checkpoint = NOW - timedelta(days=30)
    window = reconcile_window(SETTINGS, NOW, checkpoint)

    assert window is not None and window.start == checkpoint - timedelta(hours=2)
    assert window.end == checkpoint + timedelta(days=1)  # past the checkpoint: the next run goes on


def test_nothing_is_read_before_a_push_could_have_come_and_a_backfill_stops_at_now() -> None:
    assert reconcile_window(SETTINGS, NOW, checkpoint=NOW - timedelta(minutes=5)) is not None  # overlap
    fresh = ReconcileSettings(overlap=timedelta(0), wait_for_push=timedelta(minutes=10))
    assert reconcile_window(fresh, NOW, checkpoint=NOW - timedelta(minutes=5)) is None
    backfill = reconcile_window(SETTINGS, NOW, None, NOW - timedelta(days=1), NOW + timedelta(days=1))
    assert backfill is not None and backfill.end == NOW and backfill.settled_before == NOW - timedelta(minutes=10)
