"""Reconciliation end to end: recordings whose push was lost are archived all the same.

The providers' own records of their calls (a PBX's CDR CSV, CCC's ListCallDetailRecords) and
Dypls call-ended reports are read by the real reconciler handler against the simulators; the
stack is the one of template.yaml in moto. Runs are started the way the schedule or an operator
starts them (a direct invocation of ReconcilerFunction), so no test waits for a timer.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import pytest

from local.emulator.stack import LocalStack
from local.simulation import with_token
from local.simulators.ccc import CccSimulator
from local.simulators.dypls import DyplsSimulator
from tests.integration.conftest import (
    ZONE,
    Alerts,
    AlibabaSource,
    Archive,
    Pbx,
    concurrently,
    post_report,
    wait_for,
    webhook_url,
)

pytestmark = pytest.mark.integration


def reconcile(stack: LocalStack, source_id: str, **window: str) -> dict[str, Any]:
    """One reconciliation run, as the schedule (no window) or an operator's backfill starts it."""
    report = stack.invoke("ReconcilerFunction", {"source_id": source_id, **window})
    assert isinstance(report, dict)
    return report


def all_items(archive: Archive, source_id: str) -> list[dict[str, Any]]:
    """Every ledger item of a source (by its call-date index), for before/after comparisons."""
    reply = archive.table.query(
        TableName=archive.stack.state["table"],
        IndexName="ByCallDate",
        KeyConditionExpression="source_id = :s",
        ExpressionAttributeValues={":s": {"S": source_id}},
    )
    return [{name: next(iter(value.values())) for name, value in item.items()} for item in reply["Items"]]


def let_the_grace_period_pass(archive: Archive, source_id: str, call_id: str) -> None:
    """The source's hour of grace for a recording receipt is over: the due time of the call's
    expectations, which the reconciler reads from the ledger, moves into the past (no test waits
    an hour, nor races a shorter grace on a busy machine)."""
    for item in archive.files(source_id, call_id):
        if item["status"] != "EXPECTED":
            continue  # the receipt came: nothing is due any more
        past = (datetime.fromisoformat(item["due_at"]) - timedelta(hours=2)).isoformat(timespec="seconds")
        archive.table.update_item(
            TableName=archive.stack.state["table"],
            Key={"pk": {"S": item["pk"]}, "sk": {"S": item["sk"]}},
            UpdateExpression="SET due_at = :past",
            ExpressionAttributeValues={":past": {"S": past}},
        )


def object_versions(archive: Archive, prefix: str) -> list[str]:
    reply = archive.s3.list_object_versions(Bucket=archive.bucket, Prefix=prefix)
    return sorted(f"{v['Key']}@{v['VersionId']}" for v in reply.get("Versions", []))


def test_pbx_calls_whose_reports_never_came_are_archived_by_reconciliation_alone(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["recon-pbx"]
    # Given a PBX that pushes nothing: 5 recorded calls and 2 that were not recorded
    recorded = [pbx.simulator.place_call(duration_s=20 + i, push=False) for i in range(5)]
    unrecorded = [pbx.simulator.place_call(recorded=False, status="NO ANSWER", push=False) for _ in range(2)]
    downloads_before = pbx.simulator.counters["downloads_ok"]

    # When reconciliation runs
    report = reconcile(stack, pbx.source_id)

    # Then the five recordings are archived intact, and nothing is made of the unrecorded calls
    assert report["status"] == "ok" and report["lost_pushes"] == 5 and report["enqueued"] == 5
    assert report["calls"] >= 7 and report["problems"] == []
    for call in recorded:
        [item] = archive.settled(pbx.source_id, call.callid)
        assert item["status"] == "STORED" and item["sha256"] == call.sha256 and item["origin"] == "reconciliation"
        assert hashlib.sha256(archive.body(item["s3_key"])).hexdigest() == call.sha256
    for call in unrecorded:
        assert archive.files(pbx.source_id, call.callid) == []
    assert pbx.simulator.counters["downloads_ok"] == downloads_before + 5
    # And the CDR CSV the PBX answered is kept as evidence of what it said
    audit = archive.body(report["audit_key"]).decode()
    assert report["audit_key"].startswith(f"cdr/{pbx.source_id}/") and report["audit_key"].endswith(".csv")
    assert all(call.callid in audit for call in recorded + unrecorded)

    # When reconciliation runs three more times over overlapping windows (and a backfill)
    items, objects = all_items(archive, pbx.source_id), object_versions(archive, f"recordings/{pbx.source_id}/")
    day = datetime.now(ZONE).date()
    again = [
        reconcile(stack, pbx.source_id),
        reconcile(stack, pbx.source_id),
        reconcile(stack, pbx.source_id, **{"from": f"{day - timedelta(days=1)}T00:00:00", "to": f"{day}T23:59:59"}),
    ]
    stack.wait_idle(30)

    # Then they find the calls again but add no ledger item, no object and no download
    assert [(r["status"], r["lost_pushes"], r["enqueued"]) for r in again] == [("ok", 0, 0)] * 3
    assert all(r["found"] >= 5 for r in again)
    assert all_items(archive, pbx.source_id) == items
    assert object_versions(archive, f"recordings/{pbx.source_id}/") == objects
    assert pbx.simulator.counters["downloads_ok"] == downloads_before + 5


def test_a_late_report_and_two_reconcilers_at_once_still_download_each_recording_once(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["recon-pbx"]
    calls = [pbx.simulator.place_call(duration_s=30, push=False) for _ in range(3)]
    downloads_before = pbx.simulator.counters["downloads_ok"]

    # When two reconcilers run at once, and the reports arrive after all
    reports = concurrently(lambda: reconcile(stack, pbx.source_id), lambda: reconcile(stack, pbx.source_id))
    replies = [post_report(stack, pbx.source_id, call.report, token=pbx.token) for call in calls]

    # Then each recording is downloaded once and stored once
    assert all(r["status"] == "ok" for r in reports) and all(r.status_code == 200 for r in replies)
    assert sum(r["enqueued"] for r in reports) >= 3
    for call in calls:
        [item] = archive.settled(pbx.source_id, call.callid)
        assert item["status"] == "STORED" and item["sha256"] == call.sha256
        assert len(archive.versions(item["s3_key"])) == 1
    assert pbx.simulator.counters["downloads_ok"] == downloads_before + 3


def test_a_ccc_2017_call_whose_event_was_never_forwarded_is_archived(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source = alibaba["recon-ccc-2017"]
    assert isinstance(source.simulator, CccSimulator)
    # Given a transferred call (three files) that no forwarder reported, and one not recorded
    call = source.simulator.place_call(transferred_legs=1, duration_s=40, ready_after_s=0)
    silent = source.simulator.place_call(duration_s=10, recorded=False)

    report = reconcile(stack, source.source_id)

    assert report["status"] == "ok" and report["lost_pushes"] == 1
    items = archive.settled(source.source_id, call.contact_id, count=3)
    assert sorted(item["file_name"] for item in items) == sorted(call.file_names)
    assert all(item["status"] == "STORED" for item in items)
    assert {item["sha256"] for item in items} == {f.sha256 for f in call.files}
    assert archive.files(source.source_id, silent.contact_id) == []


def test_a_ccc_2020_call_whose_recording_ready_event_was_never_sent_is_archived(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source = alibaba["recon-ccc-2020"]
    assert isinstance(source.simulator, CccSimulator)
    call = source.simulator.place_call(duration_s=30, ready_after_s=0)
    # Given only the dual-track event came through (RecordingReady was lost)
    push = source.simulator.push_event(
        call, "DualTrackRecordingReady", url=with_token(webhook_url(stack, source.source_id), source.token)
    )
    assert push.status == 200
    archive.settled(source.source_id, call.contact_id)

    report = reconcile(stack, source.source_id)

    # Then the missing mono recording is archived, and the dual-track one is not fetched again
    assert report["status"] == "ok" and report["lost_pushes"] == 1
    items = {item["file_name"]: item for item in archive.settled(source.source_id, call.contact_id, count=2)}
    assert items[call.mono.file_name]["sha256"] == call.mono.sha256
    assert items[call.multi_channel.file_name]["sha256"] == call.multi_channel.sha256
    assert items[call.multi_channel.file_name]["origin"] == "push"
    assert items[call.mono.file_name]["origin"] == "reconciliation"


def test_a_dypls_call_whose_recording_receipt_was_lost_is_archived_after_the_grace_period(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource], alerts: Alerts
) -> None:
    source = alibaba["recon-dypls"]
    assert isinstance(source.simulator, DyplsSimulator)
    url = with_token(webhook_url(stack, source.source_id), source.token)
    answered = source.simulator.place_call(duration_s=40, ready_after_s=0)
    unanswered = source.simulator.place_call(duration_s=0)

    # Given only the call-ended reports arrived (the recording receipt was lost)
    records = [source.simulator.secret_report(answered), source.simulator.secret_report(unanswered)]
    assert source.simulator.push_receipts(url, records).ok
    [expected] = wait_for(lambda: archive.files(source.source_id, answered.call_id), what="the expectation")
    assert expected["status"] == "EXPECTED"

    # When reconciliation runs before the grace period is over, nothing is fetched yet
    early = reconcile(stack, source.source_id)
    assert (early["status"], early["enqueued"]) == ("ok", 0)

    # When it runs after the grace period
    let_the_grace_period_pass(archive, source.source_id, answered.call_id)
    report = reconcile(stack, source.source_id)

    # Then the recording is fetched anyway, and the unanswered call ends NO_RECORDING, unalerted
    assert report["status"] == "ok" and report["lost_pushes"] == 1
    [item] = archive.settled(source.source_id, answered.call_id)
    assert item["status"] == "STORED" and item["sha256"] == answered.sha256
    [none] = archive.files(source.source_id, unanswered.call_id)
    assert none["status"] == "NO_RECORDING" and "not answered" in none["reason"]
    stack.wait_idle(30)
    assert alerts.mentioning(unanswered.call_id) == []


def test_a_dypls_expectation_is_dropped_once_its_receipt_came(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source = alibaba["recon-dypls"]
    assert isinstance(source.simulator, DyplsSimulator)
    url = with_token(webhook_url(stack, source.source_id), source.token)
    call = source.simulator.place_call(duration_s=25, ready_after_s=0)
    assert source.simulator.push_receipts(url, [source.simulator.secret_report(call)]).ok
    [expected] = wait_for(lambda: archive.files(source.source_id, call.call_id), what="the expectation")
    assert expected["status"] == "EXPECTED"

    # When the receipt arrives in time
    assert source.simulator.push_receipts(url, [source.simulator.secret_recording(call)]).ok
    [item] = archive.settled(source.source_id, call.call_id)
    let_the_grace_period_pass(archive, source.source_id, call.call_id)
    report = reconcile(stack, source.source_id)

    # Then reconciliation counts no lost push and the recording stays as it was
    assert report["lost_pushes"] == 0
    assert archive.files(source.source_id, call.call_id) == [item]


def test_a_dypls_source_cannot_be_backfilled_and_says_why(stack: LocalStack) -> None:
    report = reconcile(stack, "recon-dypls", **{"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00"})
    assert report["status"] == "failed" and "no list of calls" in report["error"]


def odd_export(rows: list[dict[str, str]]) -> bytes:
    """A PBX export unlike the simulator's own: a BOM, other headers, an unknown column, and a
    last line cut short."""
    header = "\ufeffCall ID,Start Time,Caller,Callee,Duration,Recording File,Queue\r\n"
    lines = [
        f"{r['callid']},{r['timestart']},{r['callfrom']},{r['callto']},{r['callduraction']},{r['recording']},sales"
        for r in rows
    ]
    return (header + "\r\n".join(lines) + "\r\n1796000000.1,2026-").encode("utf-8")


def test_an_odd_cdr_export_is_read_by_its_header_and_its_broken_line_reported(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["recon-pbx"]
    call = pbx.simulator.place_call(duration_s=15, push=False)
    pbx.simulator.cdr_renderer = odd_export
    try:
        report = reconcile(stack, pbx.source_id)
    finally:
        pbx.simulator.cdr_renderer = None

    assert report["status"] == "ok" and report["lost_pushes"] >= 1
    assert any("truncated" in problem for problem in report["problems"])
    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "STORED" and item["sha256"] == call.sha256


def test_a_cdr_export_without_a_recording_column_fails_the_run_clearly_and_the_next_run_catches_up(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["recon-pbx"]
    call = pbx.simulator.place_call(duration_s=15, push=False)
    pbx.simulator.cdr_renderer = lambda rows: b"callid,timestart\r\n" + b"".join(
        f"{r['callid']},{r['timestart']}\r\n".encode() for r in rows
    )
    try:
        failed = reconcile(stack, pbx.source_id)
    finally:
        pbx.simulator.cdr_renderer = None

    assert failed["status"] == "failed" and "no recording column" in failed["error"]
    stack.wait_idle(30)
    assert archive.files(pbx.source_id, call.callid) == []
    # The checkpoint did not move past the unreadable window: the next run reads it again.
    again = reconcile(stack, pbx.source_id)
    assert again["status"] == "ok" and again["window_start"] <= failed["window_start"]
    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "STORED"
