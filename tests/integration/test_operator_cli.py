"""The ``callvault`` operator command against the local stack (its state file), as ops use it.

Each command runs in-process through ``callvault.admin.cli.main`` with the arguments an
operator types; one test runs the installed console script to pin that it exists.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callvault.admin import erasure
from callvault.admin.cli import main
from callvault.admin.target import StackTarget
from callvault.keys import catalog_key_of_folder
from callvault.ledger import RecordingLedger
from local.emulator.stack import LocalStack
from tests.conftest import ROOT
from tests.integration.conftest import ZONE, Archive, Pbx, pbx_job, post_report

pytestmark = pytest.mark.integration


def callvault(stack: LocalStack, *args: str) -> tuple[int, str]:
    """Run ``callvault ARGS --state <the stack's state file>``; returns (exit status, stdout)."""
    out = io.StringIO()
    code = main([*args, "--state", str(stack.state_file)], out=out)
    return code, out.getvalue()


def callvault_json(stack: LocalStack, *args: str) -> tuple[int, Any]:
    code, text = callvault(stack, *args, "--json")
    return code, json.loads(text) if text.strip() else None


def test_failed_lists_a_failed_file_with_its_reason_and_retry_archives_it_once_the_fault_is_cleared(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["ops-pbx"]
    # Given a recording whose downloads fail until the workflow gives up
    pbx.simulator.set_fault("error_5xx", count=1000)
    call = pbx.simulator.place_call(duration_s=30, push=False)
    try:
        assert post_report(stack, pbx.source_id, call.report, token=pbx.token).status_code == 200
        [item] = archive.settled(pbx.source_id, call.callid)
        assert item["status"] == "FAILED"
    finally:
        pbx.simulator.clear_faults()

    # When the operator lists what failed
    code, failed = callvault_json(stack, "failed", "--source", pbx.source_id)
    assert code == 0
    [entry] = [f for f in failed if f["call_id"] == call.callid]
    assert entry["source_id"] == pbx.source_id and "gave up after 4 attempts" in entry["reason"]
    code, text = callvault(stack, "failed", "--since", "1h")
    assert code == 0 and call.callid in text and "HTTP 503" in text

    # And retries it now that the PBX is well again
    code, text = callvault(stack, "retry", pbx.source_id, call.callid)
    assert code == 0 and "1 file(s) enqueued again" in text

    # Then it is archived, and the ledger says who asked for the retry
    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "STORED" and item["sha256"] == call.sha256
    assert item["retried_by"].endswith("(local stack)") and item["retried_at"] and item["origin"] == "operator"
    code, failed = callvault_json(stack, "failed", "--source", pbx.source_id)
    assert call.callid not in [f["call_id"] for f in failed]
    # A second retry has nothing left to do
    assert callvault(stack, "retry", pbx.source_id, call.callid)[0] == 1


def test_status_shows_a_calls_files_and_says_when_a_call_is_unknown(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx], capsys: pytest.CaptureFixture[str]
) -> None:
    pbx = pbxs["ops-pbx"]
    call = pbx.simulator.place_call(duration_s=20, push=False)
    post_report(stack, pbx.source_id, call.report, token=pbx.token)
    [item] = archive.settled(pbx.source_id, call.callid)

    code, files = callvault_json(stack, "status", pbx.source_id, call.callid)
    assert code == 0
    [entry] = files
    assert (entry["status"], entry["s3_key"], entry["attempts"]) == ("STORED", item["s3_key"], 1)
    code, text = callvault(stack, "status", pbx.source_id, call.callid)
    assert code == 0 and "STORED" in text and call.recording in text

    assert callvault(stack, "status", pbx.source_id, "no-such-call")[0] == 1
    assert "no record of call 'no-such-call'" in capsys.readouterr().err


def test_dlq_redrive_moves_a_parked_job_back_and_it_is_processed(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["ops-pbx"]
    call = pbx.simulator.place_call(duration_s=25, push=False)
    job = pbx_job(pbx, call)
    # Given a valid job and a malformed message parked in the dead-letter queue
    sqs = stack.client("sqs")
    sqs.send_message(QueueUrl=stack.state["dlq_url"], MessageBody=json.dumps(job))
    sqs.send_message(QueueUrl=stack.state["dlq_url"], MessageBody='{"not": "a job"}')

    code, parked = callvault_json(stack, "dlq", "list")
    assert code == 0
    assert sorted(bool(m["job"]) for m in parked) == [False, True]
    assert any("lacks" in (m["problem"] or "") for m in parked)

    # When the operator redrives the DLQ
    code, text = callvault(stack, "dlq", "redrive")

    # Then the job is archived and the malformed message stays parked
    assert code == 0 and "1 job(s) moved back to the fetch queue, 1 invalid message(s) left" in text
    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "STORED" and item["sha256"] == call.sha256
    code, left = callvault_json(stack, "dlq", "list")
    assert [m["job"] for m in left] == [None]


def test_reconcile_backfills_a_range_and_stats_counts_by_source_and_status(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx], capsys: pytest.CaptureFixture[str]
) -> None:
    pbx = pbxs["ops-pbx"]
    # Given two recorded calls the PBX never reported, earlier today in the PBX's zone
    start = datetime.now(ZONE).replace(microsecond=0) - timedelta(minutes=20)
    calls = [pbx.simulator.place_call(duration_s=30, start=start + timedelta(minutes=i), push=False) for i in (0, 1)]

    # When the operator backfills the last two days
    day = datetime.now(ZONE).date()
    code, text = callvault(
        stack, "reconcile", pbx.source_id, "--from", f"{day - timedelta(days=1)}", "--to", f"{day + timedelta(days=1)}"
    )

    # Then each day is a window of its own, and the calls are archived
    assert code == 0, capsys.readouterr().err
    assert "2/2 windows" in capsys.readouterr().err
    assert "2 whose push was lost, 2 enqueued" in text
    for call in calls:
        [item] = archive.settled(pbx.source_id, call.callid)
        assert item["status"] == "STORED"

    code, stats = callvault_json(stack, "stats", "--since", "1d")
    assert code == 0
    files = stats["sources"][pbx.source_id]["files"]
    assert files["STORED"] >= 2
    code, text = callvault(stack, "stats")
    assert code == 0 and pbx.source_id in text and "STORED" in text


def test_a_reconcile_the_stack_refuses_is_a_clear_error(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    assert callvault(stack, "reconcile", "no-such-source")[0] == 1
    assert "unknown source 'no-such-source'" in capsys.readouterr().err
    assert callvault(stack, "reconcile", "ops-pbx", "--from", "2026-01-02")[0] == 2
    assert "give both --from and --to" in capsys.readouterr().err


def test_without_a_stack_the_command_says_how_to_name_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["failed"]) == 2
    assert "--stack-name NAME (deployed) or --state FILE" in capsys.readouterr().err
    assert main(["failed", "--state", str(tmp_path / "missing.json")]) == 2
    assert "start one with `make local`" in capsys.readouterr().err


def test_the_callvault_command_is_installed_with_help_on_each_command() -> None:
    script = Path(sys.executable).parent / "callvault"
    for args in ([], ["status"], ["failed"], ["retry"], ["dlq"], ["reconcile"], ["stats"], ["audit"], ["hash-number"]):
        result = subprocess.run(  # noqa: S603 - our own console script
            [str(script), *args, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert result.returncode == 0, result.stderr
        assert "usage: callvault" in result.stdout


def test_erase_deletes_every_version_leaves_a_tombstone_and_an_audit_record_and_the_call_never_returns(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["ops-pbx"]
    # Given an archived call whose recording also has an older version
    call = pbx.simulator.place_call(duration_s=20, push=False)
    post_report(stack, pbx.source_id, call.report, token=pbx.token)
    [item] = archive.settled(pbx.source_id, call.callid)
    archive.s3.put_object(Bucket=archive.bucket, Key=item["s3_key"], Body=b"an overwrite")
    assert len(archive.versions(item["s3_key"])) == 2

    # When the operator looks first, then erases it
    code, planned = callvault_json(
        stack, "erase", pbx.source_id, call.callid, "--reason", "GDPR request 42", "--dry-run"
    )
    folder = item["s3_key"].rsplit("/", 1)[0] + "/"
    sidecar, catalogued = folder + "call.json", catalog_key_of_folder(folder)
    planned_keys = sorted(v["key"] for v in planned["versions"])
    assert code == 0 and planned_keys == sorted([item["s3_key"], item["s3_key"], sidecar, catalogued])
    assert len(archive.versions(item["s3_key"])) == 2
    code, record = callvault_json(stack, "erase", pbx.source_id, call.callid, "--reason", "GDPR request 42")

    # Then no version of anything in the call's folder is left, nor its catalogue entry
    assert code == 0 and record["status"] == "erased"
    for prefix in (folder, catalogued):
        listed = archive.s3.list_object_versions(Bucket=archive.bucket, Prefix=prefix)
        assert listed.get("Versions", []) == [] and listed.get("DeleteMarkers", []) == []
    # the ledger keeps a tombstone without the job or its phone numbers
    [tombstone] = archive.files(pbx.source_id, call.callid)
    assert tombstone["status"] == "ERASED" and "job" not in tombstone and "s3_key" not in tombstone
    # and the audit record says who, when, why and what, with the file's sha256
    assert record["reason"] == "GDPR request 42" and "(local stack)" in record["erased_by"]
    assert [f["sha256"] for f in record["files"]] == [item["sha256"]]
    assert {v["key"] for v in record["versions"]} == {item["s3_key"], sidecar, catalogued}

    # When the PBX reports the call again, it is not archived again
    post_report(stack, pbx.source_id, call.report, token=pbx.token)
    stack.wait_idle(30)
    assert archive.files(pbx.source_id, call.callid) == [tombstone]
    assert archive.s3.list_object_versions(Bucket=archive.bucket, Prefix=folder).get("Versions", []) == []
    # and a second erasure finds nothing left to erase
    assert callvault(stack, "erase", pbx.source_id, call.callid, "--reason", "again")[0] == 1


@pytest.mark.parametrize(
    ("lock", "bypass", "refusal"),
    [
        ({"ObjectLockLegalHoldStatus": "ON"}, True, "under a legal hold"),
        ({"ObjectLockMode": "COMPLIANCE"}, True, "COMPLIANCE retention"),
        ({"ObjectLockMode": "GOVERNANCE"}, False, "--bypass-governance overrides it"),
        ({"ObjectLockMode": "GOVERNANCE"}, True, None),
    ],
    ids=["legal-hold", "compliance", "governance", "governance-bypassed"],
)
def test_erase_refuses_what_object_lock_protects_and_deletes_nothing(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx], lock: dict[str, str], bypass: bool, refusal: str | None
) -> None:
    pbx = pbxs["ops-pbx"]
    call = pbx.simulator.place_call(duration_s=15, push=False)
    post_report(stack, pbx.source_id, call.report, token=pbx.token)
    [item] = archive.settled(pbx.source_id, call.callid)
    # Given the recording in a bucket with Object Lock (chosen when a bucket is created)
    locked = f"locked-{lock.get('ObjectLockMode', 'hold').lower()}-{int(bypass)}"
    archive.s3.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    retention = (
        {"ObjectLockRetainUntilDate": datetime.now(tz=UTC) + timedelta(days=30)} if "ObjectLockMode" in lock else {}
    )
    archive.s3.put_object(Bucket=locked, Key=item["s3_key"], Body=b"recording", **lock, **retention)
    table = StackTarget.local(stack.state_file).ledger_table()
    ledger = RecordingLedger(table)

    plan = erasure.plan_erasure(archive.s3, locked, ledger, pbx.source_id, call.callid, bypass_governance=bypass)

    if refusal is None:
        erasure.erase(archive.s3, locked, table, plan, reason="test", erased_by="test", bypass_governance=True)
        assert archive.s3.list_object_versions(Bucket=locked, Prefix=item["s3_key"]).get("Versions", []) == []
        return
    # Then it is refused with the reason, before anything is deleted
    assert len(plan.refusals) == 1 and refusal in plan.refusals[0]
    with pytest.raises(erasure.ErasureRefused, match=refusal.split(" ")[0]):
        erasure.erase(archive.s3, locked, table, plan, reason="test", erased_by="test")
    assert len(archive.s3.list_object_versions(Bucket=locked, Prefix=item["s3_key"])["Versions"]) == 1
    assert [f["status"] for f in archive.files(pbx.source_id, call.callid)] == ["STORED"]


def test_audit_confirms_archived_objects_against_the_ledger_and_names_one_that_is_gone(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["ops-pbx"]
    call = pbx.simulator.place_call(duration_s=15, push=False)
    post_report(stack, pbx.source_id, call.report, token=pbx.token)
    [item] = archive.settled(pbx.source_id, call.callid)

    code, report = callvault_json(stack, "audit", pbx.source_id)
    assert item["s3_key"] not in [p["key"] for p in report["problems"]]
    assert report["intact"] >= 1

    # When the stored version disappears (a bucket policy gone wrong, a lifecycle rule too eager)
    archive.s3.delete_object(Bucket=archive.bucket, Key=item["s3_key"], VersionId=item["version_id"])
    code, report = callvault_json(stack, "audit", pbx.source_id)

    assert code == 1
    [problem] = [p for p in report["problems"] if p["key"] == item["s3_key"]]
    assert problem["version"] == item["version_id"] and problem["problem"].startswith("missing")


def test_hash_number_says_how_the_sources_sidecars_and_events_write_a_number(stack: LocalStack) -> None:
    code, answer = callvault_json(stack, "hash-number", "ops-pbx", "+86 138-0013-8000")
    assert code == 0 and answer == {"source": "ops-pbx", "policy": "mask", "number": "***8000"}
    assert callvault(stack, "hash-number", "no-such-source", "1")[0] == 2
