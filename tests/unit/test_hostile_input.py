"""Hostile input from a caller holding a valid token: a 4xx naming the problem (or, in a Dypls
batch, a rejected record named in the reply) and nothing enqueued; never a crash.

Driven through the webhook's core (``receive``) as the handler calls it; what a rejection
answers is what the handler sends (``{"error": message}``). The same cases run over HTTP
against the local stack in tests/integration/test_hostile_input.py.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from callvault.errors import RequestRejected, SourceNotFound
from callvault.models import FetchJob
from callvault.providers.events import MAX_EVENTS_PER_REQUEST, MAX_ID_LENGTH, MAX_JSON_DEPTH
from callvault.providers.interface import InboundRequest, Source
from callvault.signed_deliveries import SignedDeliveries
from callvault.sources import parse_source
from callvault.webhook import SIGNATURE_WINDOW, receive, signature
from tests.conftest import ccc_source_document, dypls_source_document, pbx_source_document, sample_event
from tests.fakes import FakeTable

SECRET = "forwarder-signing-secret-42"
PBX = parse_source(pbx_source_document(retention_days=30))
CCC = parse_source(ccc_source_document())
SIGNED_CCC = parse_source(ccc_source_document(id="signed-ccc", webhook_signing_secret=SECRET))
POOL = parse_source(dypls_source_document())
RECEIVED = {"code": 0, "msg": "接收成功"}
# Recording receipts with call times from 2019: plausible, and old enough to be in every past.
GOOD_RECEIPT = sample_event("dypls/receipts-mixed.json")[0]
YEAR_9999_MS = 253_402_214_399_000  # 9999-12-31 07:59:59 in Beijing


@dataclass
class Queue:
    """The fetch queue: keeps what was enqueued; ``broken`` refuses like an SQS outage."""

    jobs: list[FetchJob] = field(default_factory=list)
    broken: bool = False

    def enqueue(self, jobs: list[FetchJob]) -> None:
        if self.broken:
            raise RuntimeError("fetch queue refused 1 of 1 jobs (ServiceUnavailable)")
        self.jobs.extend(jobs)


@dataclass
class Sources:
    def get(self, source_id: str) -> Source:
        for source in (PBX, CCC, SIGNED_CCC, POOL):
            if source.id == source_id:
                return source
        raise SourceNotFound(f"unknown source {source_id!r}")


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    enqueued: list[FetchJob]


def post(
    source: Source,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    queue: Queue | None = None,
    table: FakeTable | None = None,
    source_id: str | None = None,
) -> Answer:
    """One webhook call with the source's token, answered as the handler answers it."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    queue = queue if queue is not None else Queue()
    inbound = InboundRequest(
        source_id=source.id if source_id is None else source_id,
        body=raw,
        headers={"x-webhook-token": source.webhook_token, **(headers or {})},
        query={},
        source_ip="203.0.113.7",
    )
    store = table if table is not None else FakeTable()
    deliveries = SignedDeliveries(lambda: store, SIGNATURE_WINDOW)
    try:
        reply = receive(inbound, Sources(), queue, deliveries)  # type: ignore[arg-type]
    except RequestRejected as rejected:
        return Answer(rejected.status_code, {"error": rejected.message}, queue.jobs)
    return Answer(reply.status_code, reply.body, queue.jobs)


def signed(body: bytes, timestamp: str | None = None) -> dict[str, str]:
    stamp = timestamp if timestamp is not None else str(int(time.time()))
    return {"x-callvault-timestamp": stamp, "x-callvault-signature": signature(SECRET, stamp, body)}


def refused(answer: Answer, status: int, *words: str) -> None:
    """The call was refused with this status, a message holding ``words``, and nothing enqueued."""
    assert answer.status == status, answer.body
    assert all(word in answer.body["error"] for word in words), answer.body["error"]
    assert answer.enqueued == []


# -- the body as a whole ------------------------------------------------------------------


@pytest.mark.parametrize("source", [PBX, CCC, POOL], ids=lambda s: s.provider.name)
def test_json_nested_a_thousand_deep_is_a_400_not_a_recursion_error(source: Source) -> None:
    answer = post(source, b"[" * 1000 + b"]" * 1000)

    refused(answer, 400, f"more than {MAX_JSON_DEPTH} levels deep")


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    event = {"contactId": "1272014011", "note": "[" * 1000}

    answer = post(CCC, event)

    assert answer.status == 200 and [job.call_id for job in answer.enqueued] == ["1272014011"]


# The smallest event of each provider that would make a job: thousands fit in max_body_bytes.
SMALLEST_EVENT = {
    "pbx": lambda i: {"action": "NewCdr", "callid": str(i), "recording": f"{i}.wav"},
    "ccc": lambda i: {"contactId": str(i)},
    "dypls": lambda i: {"call_id": str(i), "call_time": 1551752068000},
}


@pytest.mark.parametrize("source", [PBX, CCC, POOL], ids=lambda s: s.provider.name)
def test_thousands_of_events_in_one_body_are_a_413_before_anything_is_enqueued(source: Source) -> None:
    events = [SMALLEST_EVENT[source.provider.name](i) for i in range(3000)]

    answer = post(source, events)

    refused(answer, 413, "3000 events", f"at most {MAX_EVENTS_PER_REQUEST}")


def test_a_full_batch_at_the_cap_is_accepted() -> None:
    batch = [GOOD_RECEIPT | {"call_id": f"{i:032x}"} for i in range(MAX_EVENTS_PER_REQUEST)]

    answer = post(POOL, batch)

    assert answer.status == 200 and len(answer.enqueued) == MAX_EVENTS_PER_REQUEST


@pytest.mark.parametrize(
    ("content_type", "words"),
    [
        ("application/x-www-form-urlencoded", ("'application/x-www-form-urlencoded'", "send application/json")),
        ("multipart/form-data; boundary=x", ("'multipart/form-data'",)),
        ("text/xml", ("'text/xml'",)),
        ("application/json; charset=GBK", ("charset 'gbk'", "UTF-8")),
    ],
)
def test_a_body_declared_as_something_other_than_json_is_a_415(content_type: str, words: tuple[str, ...]) -> None:
    answer = post(PBX, sample_event("pbx/newcdr.json"), headers={"content-type": content_type})

    refused(answer, 415, *words)


@pytest.mark.parametrize("content_type", ["application/json", "application/json;charset=UTF-8", ""])
def test_json_as_the_providers_send_it_or_undeclared_is_read(content_type: str) -> None:
    answer = post(PBX, sample_event("pbx/newcdr.json"), headers={"content-type": content_type})

    assert answer.status == 200 and len(answer.enqueued) == 1


def test_a_source_id_with_a_trailing_newline_is_unknown() -> None:
    refused(post(PBX, sample_event("pbx/newcdr.json"), source_id="office-pbx\n"), 404, "unknown source")


# -- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contact_id", "words"),
    [
        ({"a": 1}, ("contactId must be text or a number, got an object",)),
        ([1272014011], ("got a list",)),
        (True, ("got true/false",)),
        (1272014011.5, ("an id cannot be a float",)),
        (float("nan"), ("an id cannot be a float",)),
    ],
    ids=["object", "list", "boolean", "float", "NaN"],
)
def test_an_id_of_the_wrong_type_is_refused_not_coerced(contact_id: Any, words: tuple[str, ...]) -> None:
    # json.dumps writes NaN as the bare NaN that Python's parser (and a hostile sender) accepts.
    answer = post(CCC, {"contactId": contact_id})

    refused(answer, 400, *words)


@pytest.mark.parametrize(
    ("call_id", "words"),
    [
        ("1588641695.1772\x00", ("U+0000",)),
        ("1588641695\u202e2771.1", ("U+202E", "right-to-left override")),
        ("1588641695\u20661772", ("U+2066", "left-to-right isolate")),
        ("1588641695\ud8001772", ("U+D800", "lone surrogate")),
        ("1588641695\n1772", ("U+000A",)),
        ("1588641695·1772", ("U+00B7", "printable ASCII")),
    ],
    ids=["NUL", "bidi-override", "bidi-isolate", "lone-surrogate", "newline", "non-ASCII"],
)
def test_an_id_with_characters_that_cannot_travel_is_refused(call_id: str, words: tuple[str, ...]) -> None:
    report = sample_event("pbx/newcdr.json") | {"callid": call_id}

    answer = post(PBX, report)

    refused(answer, 400, "callid contains", *words)


def test_a_five_thousand_character_call_id_is_refused_before_it_reaches_the_ledger() -> None:
    answer = post(CCC, {"contactId": "7" * 5000})

    refused(answer, 400, "contactId is 5000 characters long", f"at most {MAX_ID_LENGTH}")


def test_an_id_at_the_cap_is_accepted() -> None:
    answer = post(CCC, {"contactId": "7" * MAX_ID_LENGTH})

    assert answer.status == 200 and answer.enqueued[0].call_id == "7" * MAX_ID_LENGTH


@pytest.mark.parametrize(
    ("source", "event", "words"),
    [
        (PBX, sample_event("pbx/newcdr.json") | {"recording": "../../etc/shadow"}, ("recording has a '..' segment",)),
        (PBX, sample_event("pbx/newcdr.json") | {"recording": "x\u202ev.wav"}, ("recording contains U+202E",)),
        (CCC, {"contactId": "1", "fileName": "..\\..\\boot.ini"}, ("fileName has a '..' segment",)),
        (CCC, {"contactId": "1", "fileName": "a" * 600 + ".wav"}, ("fileName is 604 bytes long",)),
    ],
    ids=["pbx-dotdot", "pbx-bidi", "ccc-dotdot", "ccc-long"],
)
def test_a_provider_file_name_that_climbs_or_hides_is_refused(
    source: Source, event: dict[str, Any], words: tuple[str, ...]
) -> None:
    refused(post(source, event), 400, *words)


def test_other_text_of_an_event_obeys_the_same_characters() -> None:
    report = sample_event("pbx/newcdr.json") | {"callfrom": "101\x00"}

    refused(post(PBX, report), 400, "callfrom contains U+0000")


# -- times centuries away -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call_time", "words"),
    [
        (YEAR_9999_MS, ("9999-", "not a plausible call time")),
        ("9999-12-31 23:59:59", ("9999-12-31", "not a plausible call time")),
        ("0000-01-01 00:00:00", ("is not 'yyyy-mm-dd hh:mm:ss'",)),
        (0, ("1970-01-01", "not a plausible call time")),
        (-86_400_000, ("'-86400000' is not 'yyyy-mm-dd hh:mm:ss'",)),
        (10**30, ("not a plausible epoch in milliseconds",)),
    ],
    ids=["year-9999-ms", "year-9999-text", "year-0", "epoch-0", "negative-epoch", "beyond-any-calendar"],
)
def test_a_dypls_call_time_centuries_away_rejects_its_record_and_keeps_the_batch(
    call_time: Any, words: tuple[str, ...]
) -> None:
    hostile = GOOD_RECEIPT | {"call_id": "0badc0de" * 4, "call_time": call_time}

    answer = post(POOL, [GOOD_RECEIPT, hostile])

    assert answer.status == 200
    assert [job.call_id for job in answer.enqueued] == [GOOD_RECEIPT["call_id"]]
    [reason] = answer.body.pop("rejected")
    assert answer.body == RECEIVED
    assert reason.startswith("record 1: call_time: ") and all(word in reason for word in words), reason


def test_a_dypls_batch_of_only_hostile_records_is_a_400() -> None:
    answer = post(POOL, [GOOD_RECEIPT | {"call_time": YEAR_9999_MS}, GOOD_RECEIPT | {"call_id": {"a": 1}}])

    refused(answer, 400, "record 0: call_time", "record 1: call_id must be text or a number")


@pytest.mark.parametrize("hostile", [{"call_id": float("nan")}, {"call_id": "1\x00"}, {"call_id": "9" * 5000}])
def test_a_dypls_record_with_a_hostile_id_is_rejected_alone(hostile: dict[str, Any]) -> None:
    answer = post(POOL, [hostile | {"pool_key": "FC123456", "call_time": 1551752068000}, GOOD_RECEIPT])

    assert answer.status == 200 and [job.call_id for job in answer.enqueued] == [GOOD_RECEIPT["call_id"]]
    assert answer.body["rejected"][0].startswith("record 0: call_id")


@pytest.mark.parametrize(
    ("source", "event"),
    [
        (CCC, {"contactId": "1", "callTime": "9999-12-31T23:59:59-05:00"}),  # year 10000 in Shanghai
        (CCC, {"contactId": "1", "callTime": 253_402_300_799_999}),
        (CCC, {"contactId": "1", "callTime": "0001-01-01T00:00:00+08:00"}),
        (PBX, sample_event("pbx/newcdr.json") | {"timestart": "9999-12-31 23:59:59"}),
        (PBX, sample_event("pbx/newcdr.json") | {"timestart": "1900-01-01 00:00:00"}),
    ],
    ids=["ccc-iso-9999", "ccc-epoch-9999", "ccc-year-1", "pbx-9999", "pbx-1900"],
)
def test_a_call_time_centuries_away_is_a_400_not_an_overflow(source: Source, event: dict[str, Any]) -> None:
    refused(post(source, event), 400, "not a plausible")


# -- signed CCC deliveries ------------------------------------------------------------------


def test_a_timestamp_header_with_non_ascii_digits_is_a_403() -> None:
    body = json.dumps({"contactId": "1272014011"}).encode()
    arabic_indic_now = str(int(time.time())).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))

    for stamp in ("²" * 10, arabic_indic_now, "1" * 5000):
        answer = post(SIGNED_CCC, body, headers=signed(body, stamp))
        refused(answer, 403, "X-Callvault-Timestamp must be unix seconds in ASCII digits")


def test_an_exact_replay_of_a_signed_event_is_refused_the_second_time() -> None:
    table = FakeTable()
    body = json.dumps({"contactId": "1272014011", "callTime": 1562556442750}).encode()
    headers = signed(body)

    first = post(SIGNED_CCC, body, headers=headers, table=table)
    replay = post(SIGNED_CCC, body, headers=headers, table=table)

    assert first.status == 200 and len(first.enqueued) == 1
    refused(replay, 409, "received before", "exact replay")
    # Remembered until its signature has expired anyway, then DynamoDB's TTL removes it.
    [delivery] = table.items.values()
    assert delivery["expires_at"] == int(headers["x-callvault-timestamp"]) + SIGNATURE_WINDOW + 60


def test_two_identical_signed_deliveries_at_once_pass_once() -> None:
    table, queue = FakeTable(), Queue()
    body = json.dumps({"contactId": "1272014011"}).encode()
    headers = signed(body)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def deliver() -> None:
        barrier.wait()
        statuses.append(post(SIGNED_CCC, body, headers=headers, table=table, queue=queue).status)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 409] and len(queue.jobs) == 1


def test_the_same_event_signed_anew_is_a_new_delivery() -> None:
    table = FakeTable()
    body = json.dumps({"contactId": "1272014011"}).encode()
    now = int(time.time())

    first = post(SIGNED_CCC, body, headers=signed(body, str(now)), table=table)
    again = post(SIGNED_CCC, body, headers=signed(body, str(now - 1)), table=table)

    assert (first.status, again.status) == (200, 200)


def test_a_delivery_that_could_not_be_enqueued_is_forgotten_so_its_retry_passes() -> None:
    table = FakeTable()
    body = json.dumps({"contactId": "1272014011"}).encode()
    headers = signed(body)

    with pytest.raises(RuntimeError, match="fetch queue refused"):  # a 500: the sender retries
        post(SIGNED_CCC, body, headers=headers, table=table, queue=Queue(broken=True))
    assert table.items == {}
    retry = post(SIGNED_CCC, body, headers=headers, table=table)

    assert retry.status == 200 and len(retry.enqueued) == 1
