"""Hostile input over HTTP, through the real webhook handler of the local stack: every case is
a 4xx whose JSON body names the problem, and nothing is enqueued (no fetch follows once the
stack is idle); a Dypls batch keeps its good records. The rules themselves are pinned in
tests/unit/test_hostile_input.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from callvault.webhook import signature
from local.emulator.stack import LocalStack
from local.simulation import with_token
from local.simulators.ccc import CccSimulator
from local.simulators.dypls import DyplsSimulator
from tests.conftest import sample_event
from tests.integration.conftest import (
    SIGNING_SECRET,
    AlibabaSource,
    Archive,
    Pbx,
    concurrently,
    webhook_url,
)

pytestmark = pytest.mark.integration

YEAR_9999_MS = 253_402_214_399_000  # 9999-12-31 07:59:59 in Beijing
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def tokens(pbxs: dict[str, Pbx], alibaba: dict[str, AlibabaSource]) -> dict[str, str]:
    return {pbx.source_id: pbx.token for pbx in pbxs.values()} | {s.source_id: s.token for s in alibaba.values()}


def post(
    stack: LocalStack, source_id: str, body: bytes, token: str, headers: dict[str, Any] | None = None
) -> requests.Response:
    return requests.post(
        webhook_url(stack, source_id),
        data=body,
        headers={**JSON, "X-Webhook-Token": token, **(headers or {})},
        timeout=30,
    )


def fetches(stack: LocalStack) -> int:
    """Fetcher invocations so far: every job that reaches the fetch queue makes one."""
    assert stack.runner is not None
    return sum(1 for invocation in list(stack.runner.invocations) if invocation.function_id == "FetcherFunction")


@pytest.fixture
def nothing_enqueued(stack: LocalStack) -> Iterator[None]:
    """The test's requests enqueue nothing: no fetch runs between the idle stack before and after."""
    stack.wait_idle(30)
    before = fetches(stack)
    yield
    stack.wait_idle(30)
    assert fetches(stack) == before


def signed_headers(body: bytes, timestamp: str | bytes | None = None) -> dict[str, Any]:
    """What the forwarder of docs/sources.md sends (bytes: a timestamp that is not Latin-1)."""
    stamp = timestamp if timestamp is not None else str(int(time.time()))
    text = stamp.decode() if isinstance(stamp, bytes) else stamp
    return {"X-Callvault-Timestamp": stamp, "X-Callvault-Signature": signature(SIGNING_SECRET, text, body)}


NEWCDR = sample_event("pbx/newcdr.json")


def body_of(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


@pytest.mark.parametrize(
    ("source_id", "body", "headers", "status", "error"),
    [
        ("office-pbx", b"[" * 1000 + b"]" * 1000, {}, 400, "body nests arrays or objects more than 32 levels deep"),
        ("ccc-2017", {"contactId": {"a": 1}}, {}, 400, "contactId must be text or a number, got an object"),
        ("ccc-2017", b'{"contactId": NaN}', {}, 400, "contactId must be text or a whole number, got the number nan"),
        ("ccc-2017", {"contactId": True}, {}, 400, "contactId must be text or a number, got true/false"),
        ("office-pbx", NEWCDR | {"callid": "1588641695.1772\x00"}, {}, 400, "callid contains U+0000"),
        ("office-pbx", NEWCDR | {"callid": "1588641695\u202e2771.1"}, {}, 400, "callid contains U+202E"),
        ("ccc-2017", {"contactId": "7" * 5000}, {}, 400, "contactId is 5000 characters long; an id has at most 256"),
        ("office-pbx", NEWCDR | {"recording": "../../etc/shadow"}, {}, 400, "recording has a '..' segment"),
        ("ccc-2017", {"contactId": "1", "callTime": "9999-12-31T23:59:59Z"}, {}, 400, "not a plausible call time"),
        ("office-pbx", NEWCDR, {"Content-Type": "application/x-www-form-urlencoded"}, 415, "send application/json"),
    ],
    ids=[
        "nested-1000-deep",
        "id-object",
        "id-NaN",
        "id-boolean",
        "id-NUL",
        "id-bidi-override",
        "id-5000-characters",
        "file-name-dotdot",
        "ccc-year-9999",
        "form-content-type",
    ],
)
def test_a_hostile_body_is_a_4xx_naming_the_problem_and_enqueues_nothing(
    stack: LocalStack,
    tokens: dict[str, str],
    nothing_enqueued: None,
    source_id: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    error: str,
) -> None:
    reply = post(stack, source_id, body_of(body), tokens[source_id], headers)

    assert reply.status_code == status
    assert error in reply.json()["error"]


def test_thousands_of_receipts_in_one_body_are_a_413_and_enqueue_nothing(
    stack: LocalStack, tokens: dict[str, str], nothing_enqueued: None
) -> None:
    records = [{"call_id": str(i), "call_time": 1551752068000} for i in range(3000)]  # within max_body_bytes

    reply = post(stack, "dypls-pool", body_of(records), tokens["dypls-pool"])

    assert reply.status_code == 413
    assert reply.json() == {
        "error": "body holds 3000 events; at most 100 per request are accepted (send them in several requests)"
    }


def test_a_dypls_record_in_year_9999_is_rejected_alone_and_the_rest_of_the_batch_is_archived(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source = alibaba["dypls-pool"]
    assert isinstance(source.simulator, DyplsSimulator)
    call = source.simulator.place_call(duration_s=20, ready_after_s=0)
    hostile = source.simulator.secret_recording(call) | {"call_id": "0badc0de" * 4, "call_time": YEAR_9999_MS}
    batch = [source.simulator.secret_recording(call), hostile]

    reply = requests.post(with_token(webhook_url(stack, source.source_id), source.token), json=batch, timeout=30)

    assert reply.status_code == 200
    assert reply.json() == {
        "code": 0,
        "msg": "接收成功",
        "rejected": [
            "record 1: call_time: 9999-12-31T07:59:59+08:00 is not a plausible call time"
            " (accepted: from 2000 to a day ahead of now)"
        ],
    }
    [item] = archive.settled(source.source_id, call.call_id)
    assert item["status"] == "STORED" and item["sha256"] == call.sha256
    assert archive.files(source.source_id, "0badc0de" * 4) == []


def test_a_signature_timestamp_in_non_ascii_digits_is_a_403_and_enqueues_nothing(
    stack: LocalStack, tokens: dict[str, str], nothing_enqueued: None
) -> None:
    body = body_of({"contactId": "1272014011"})
    arabic_indic_now = str(int(time.time())).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")).encode()

    for stamp in ("²" * 10, arabic_indic_now):
        reply = post(stack, "ccc-signed", body, tokens["ccc-signed"], signed_headers(body, stamp))

        assert reply.status_code == 403
        assert reply.json() == {"error": "X-Callvault-Timestamp must be unix seconds in ASCII digits"}


def test_an_exact_replay_of_a_signed_ccc_event_is_a_409_and_enqueues_nothing(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source = alibaba["ccc-signed"]
    assert isinstance(source.simulator, CccSimulator)
    call = source.simulator.place_call(duration_s=20, ready_after_s=0)
    body = body_of({"contactId": call.contact_id, "callTime": int(call.start * 1000)})
    headers = signed_headers(body)

    first = post(stack, source.source_id, body, source.token, headers)
    archived = archive.settled(source.source_id, call.contact_id, count=len(call.files))
    fetched = fetches(stack)
    replay = post(stack, source.source_id, body, source.token, headers)

    assert first.status_code == 200 and first.json() == {"code": "OK", "message": "accepted", "jobs": 1}
    assert {item["status"] for item in archived} == {"STORED"}
    assert replay.status_code == 409
    assert "received before (an exact replay)" in replay.json()["error"]
    stack.wait_idle(30)
    assert fetches(stack) == fetched


def test_two_identical_signed_deliveries_at_once_pass_once(
    stack: LocalStack, archive: Archive, alibaba: dict[str, AlibabaSource]
) -> None:
    source = alibaba["ccc-signed"]
    assert isinstance(source.simulator, CccSimulator)
    call = source.simulator.place_call(duration_s=20, ready_after_s=0)
    body = body_of({"contactId": call.contact_id})
    headers = signed_headers(body)

    replies = concurrently(*(lambda: post(stack, source.source_id, body, source.token, headers) for _ in range(2)))

    assert sorted(reply.status_code for reply in replies) == [200, 409]
    items = archive.settled(source.source_id, call.contact_id, count=len(call.files))
    assert all(len(archive.versions(item["s3_key"])) == 1 for item in items)
