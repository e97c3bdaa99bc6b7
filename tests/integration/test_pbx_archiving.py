"""PBX recordings end to end: the PBX pushes NewCdr, the stack archives the file once, intact.

Real HTTP between the functions and the simulated PBXs, real AWS APIs (moto server) for the
stack created from template.yaml, the real handler modules.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator

import pytest

from local.emulator.stack import LocalStack
from tests.bystander import Bystander
from tests.conftest import sample_event
from tests.integration.conftest import Alerts, Archive, Pbx, concurrently, pbx_job, post_report, wait_for

pytestmark = pytest.mark.integration


def test_a_finished_call_is_archived_with_the_simulators_exact_bytes(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["office-pbx"]
    # Given a recorded two-minute stereo call (several MB) that the PBX reports by itself
    call = pbx.simulator.place_call("101", "106", duration_s=120, channels=2)

    # When the stack has settled
    [item] = archive.settled(pbx.source_id, call.callid)

    # Then the ledger and the object both match the PBX's original file
    assert item["status"] == "STORED"
    assert item["sha256"] == call.sha256
    assert int(item["size"]) == call.size > 3_000_000
    day = call.timestart
    assert item["s3_key"] == (f"recordings/office-pbx/{day:%Y}/{day:%m}/{day:%d}/{call.callid}/{call.recording}")
    stored = archive.body(item["s3_key"])
    assert hashlib.sha256(stored).hexdigest() == call.sha256
    head = archive.s3.head_object(Bucket=archive.bucket, Key=item["s3_key"])
    assert head["ContentType"] == "audio/x-wav"
    assert head["Metadata"]["call-id"] == call.callid and head["Metadata"]["source-id"] == "office-pbx"


def test_calls_without_a_recording_are_acknowledged_and_skipped(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["office-pbx"]
    call = pbx.simulator.place_call(recorded=False, status="NO ANSWER", push=False)

    reply = post_report(stack, pbx.source_id, call.report, token=pbx.token)

    assert reply.status_code == 200 and reply.json() == {"status": "Success"}
    stack.wait_idle(30)
    assert archive.files(pbx.source_id, call.callid) == []


def test_the_same_report_delivered_twice_at_once_gives_one_object_and_one_ledger_item(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["dup-pbx"]
    call = pbx.simulator.place_call(duration_s=60, push=False)

    replies = concurrently(
        lambda: post_report(stack, pbx.source_id, call.report, token=pbx.token),
        lambda: post_report(stack, pbx.source_id, call.report, token=pbx.token, how="header"),
    )
    pbx.simulator.push_report(call)  # and the PBX's own push, a third delivery

    assert [r.status_code for r in replies] == [200, 200]
    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "STORED" and item["sha256"] == call.sha256
    assert len(archive.versions(item["s3_key"])) == 1
    assert pbx.simulator.counters["downloads_ok"] == 1


def test_concurrent_fetches_of_one_job_download_once(stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]) -> None:
    pbx = pbxs["dup-pbx"]
    call = pbx.simulator.place_call(duration_s=90, push=False)
    job = pbx_job(pbx, call)
    downloads_before = pbx.simulator.counters["downloads_ok"]

    def deliver(message_id: str) -> object:
        event = sample_event("fetcher-sqs.json")
        event["Records"][0] |= {"messageId": message_id, "body": json.dumps(job)}
        return stack.invoke("FetcherFunction", event)

    results = concurrently(lambda: deliver("first"), lambda: deliver("second"))

    assert results == [{"batchItemFailures": []}, {"batchItemFailures": []}]
    [item] = archive.files(pbx.source_id, call.callid)
    assert item["status"] == "STORED" and item["sha256"] == call.sha256
    assert len(archive.versions(item["s3_key"])) == 1
    assert pbx.simulator.counters["downloads_ok"] == downloads_before + 1


@pytest.mark.parametrize(
    ("source_id", "token", "body", "status", "message"),
    [
        ("office-pbx", None, None, 401, "missing source token"),
        ("office-pbx", "wrong-token-0123456789", None, 403, "wrong source token"),
        ("office-pbx", "GOOD", b'{"action": "NewCdr", "callid": ', 400, "not JSON"),
        ("office-pbx", "GOOD", {"callid": "1"}, 400, "neither 'action' nor 'event'"),
        ("no-such-pbx", "GOOD", None, 404, "unknown source"),
    ],
)
def test_rejected_webhook_calls_say_why_and_enqueue_nothing(
    stack: LocalStack,
    archive: Archive,
    pbxs: dict[str, Pbx],
    source_id: str,
    token: str | None,
    body: object,
    status: int,
    message: str,
) -> None:
    pbx = pbxs["office-pbx"]
    call_id = f"rejected-{uuid.uuid4().hex[:8]}"
    report = body if body is not None else sample_event("pbx/newcdr.json") | {"callid": call_id}

    reply = post_report(stack, source_id, report, token=pbx.token if token == "GOOD" else token)

    assert reply.status_code == status
    assert message in reply.json()["error"]
    stack.wait_idle(30)
    assert archive.files(pbx.source_id, call_id) == []


def test_an_oversized_body_is_refused(stack: LocalStack, pbxs: dict[str, Pbx]) -> None:
    pbx = pbxs["office-pbx"]
    report = sample_event("pbx/newcdr.json") | {"padding": "x" * 300_000}

    reply = post_report(stack, pbx.source_id, report, token=pbx.token)

    assert reply.status_code == 413


def test_an_expired_random_is_replaced_by_a_fresh_one_in_the_same_attempt(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["faulty-pbx"]
    pbx.simulator.set_fault("expire_random", 1)
    randoms_before = pbx.simulator.counters["get_random"]

    call = pbx.simulator.place_call(duration_s=30)

    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "STORED" and item["sha256"] == call.sha256
    assert int(item["attempts"]) == 1
    assert pbx.simulator.counters["get_random"] == randoms_before + 2


def test_an_expired_token_leads_to_a_new_login(stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]) -> None:
    pbx = pbxs["faulty-pbx"]
    call = pbx.simulator.place_call(duration_s=30, push=False)
    pbx.simulator.expire_all_tokens()  # 30 minutes without a heartbeat
    logins_before = pbx.simulator.counters["logins_ok"]

    assert post_report(stack, pbx.source_id, call.report, token=pbx.token).status_code == 200

    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "STORED" and item["sha256"] == call.sha256
    assert pbx.simulator.counters["logins_ok"] == logins_before + 1
    assert pbx.simulator.live_tokens, "the new token is registered"


def test_a_failing_pbx_does_not_lose_the_job_nor_leave_half_an_object(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    # (A download that breaks off is resumed or restarted within the attempt: test_transfers.py.)
    pbx = pbxs["faulty-pbx"]
    pbx.simulator.set_fault("error_5xx", 2)

    call = pbx.simulator.place_call(duration_s=200)

    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "STORED" and item["sha256"] == call.sha256
    assert int(item["attempts"]) == 3  # two failed attempts, handed back by the retry workflow
    assert len(archive.versions(item["s3_key"])) == 1
    assert archive.open_multipart_uploads() == []


def test_a_pbx_that_stalls_past_the_read_timeout_is_retried(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["slow-pbx"]
    # Far past the source's 1 s read timeout, however slow the machine (the stalled reply is dropped).
    pbx.simulator.set_fault("slow", 1, seconds=30)

    call = pbx.simulator.place_call(duration_s=20)

    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "STORED" and item["sha256"] == call.sha256
    assert int(item["attempts"]) == 2


def test_a_pbx_with_a_private_ca_is_reached_through_the_sources_ca_bundle(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx]
) -> None:
    pbx = pbxs["tls-pbx"]

    call = pbx.simulator.place_call(duration_s=20)

    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "STORED" and item["sha256"] == call.sha256


def test_bad_pbx_credentials_end_as_failed_with_the_reason_and_an_alert_without_phone_numbers(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx], alerts: Alerts
) -> None:
    pbx = pbxs["wrong-password-pbx"]
    # A call from a mobile phone to an outside number: both numbers are in the PBX's report
    call = pbx.simulator.place_call("13800138000", "02161234567", duration_s=10, call_type="Inbound", push=False)
    failed_logins_before = pbx.simulator.counters["logins_failed"]

    assert post_report(stack, pbx.source_id, call.report, token=pbx.token).status_code == 200

    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "FAILED"
    assert "rejected the API username or password" in item["reason"]
    # One login try, no storm of them: five failures would lock the PBX against our address.
    assert pbx.simulator.counters["logins_failed"] == failed_logins_before + 1
    # Operators are told which recording and why, and how to look and retry; not who called whom
    [alert] = wait_for(lambda: alerts.mentioning(call.callid), what="the alert")
    assert "13800138000" not in alert and "02161234567" not in alert
    message = json.loads(alert)
    assert (message["source_id"], message["call_id"], message["status"]) == (pbx.source_id, call.callid, "FAILED")
    assert "rejected the API username or password" in message["reason"]
    assert message["inspect"] == f"callvault status {pbx.source_id} {call.callid}"


@pytest.fixture
def elsewhere() -> Iterator[Bystander]:
    """Where the PBX's redirects point: it must never hear from the stack."""
    with Bystander() as server:
        yield server


def test_a_redirected_recording_download_fails_with_the_reason_and_fetches_nothing_elsewhere(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx], elsewhere: Bystander
) -> None:
    pbx = pbxs["redirect-pbx"]
    # Given a PBX that answers the download with a 302 to another server
    call = pbx.simulator.place_call(duration_s=10, push=False)
    pbx.simulator.set_fault("redirect", 1, endpoint="recording/download", status=302, location=elsewhere.base_url)

    # When its report comes in
    assert post_report(stack, pbx.source_id, call.report, token=pbx.token).status_code == 200

    # Then the file ends FAILED at once, saying why, and nothing was fetched from the other server
    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "FAILED" and int(item["attempts"]) == 1
    assert item["reason"] == (
        "PBX recording/download answered 302 redirect to '127.0.0.1'; redirects are refused"
        " (point base_url at the address the PBX API answers on)"
    )
    assert archive.versions(item["s3_key"]) == []
    assert elsewhere.requests == []


def test_a_redirected_login_fails_with_the_reason_and_sends_the_credentials_nowhere(
    stack: LocalStack, archive: Archive, pbxs: dict[str, Pbx], elsewhere: Bystander
) -> None:
    pbx = pbxs["redirect-pbx"]
    # Given a PBX whose token died, and whose next login is answered with a 307 elsewhere
    call = pbx.simulator.place_call(duration_s=10, push=False)
    pbx.simulator.expire_all_tokens()
    pbx.simulator.set_fault("redirect", 1, endpoint="login", status=307, location=elsewhere.base_url)

    # When a report makes the fetcher log in again
    assert post_report(stack, pbx.source_id, call.report, token=pbx.token).status_code == 200

    # Then the file ends FAILED, saying why, and the login (password hash, webhook token) went nowhere
    [item] = archive.settled(pbx.source_id, call.callid)
    assert item["status"] == "FAILED" and int(item["attempts"]) == 1
    assert item["reason"].startswith("PBX login answered 307 redirect to '127.0.0.1'; redirects are refused")
    assert pbx.simulator.faults_pending() == {}
    assert elsewhere.requests == []


def test_the_session_keeper_logs_in_again_when_the_token_died(stack: LocalStack, pbxs: dict[str, Pbx]) -> None:
    pbx = pbxs["office-pbx"]
    pbx.simulator.expire_all_tokens()
    assert pbx.simulator.report_url is None

    stack.run_schedules_now("PbxSessionKeeperFunction")

    assert pbx.simulator.report_url is not None and pbx.source_id in pbx.simulator.report_url


def test_a_malformed_job_is_parked_in_the_dead_letter_queue(stack: LocalStack) -> None:
    sqs = stack.client("sqs")
    sqs.send_message(QueueUrl=stack.state["queue_url"], MessageBody='{"source_id": "office-pbx"}')

    def parked() -> list[dict[str, object]]:
        reply = sqs.receive_message(QueueUrl=stack.state["dlq_url"], WaitTimeSeconds=1)
        return list(reply.get("Messages", []))

    [message] = wait_for(parked, 60, "the malformed job to reach the DLQ")
    assert message["Body"] == '{"source_id": "office-pbx"}'
