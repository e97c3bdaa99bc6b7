"""The recording ledger against an in-memory table (tests/fakes.py): claims, leases, statuses,
and the indexes operators query. The same code runs against DynamoDB in the end-to-end tests."""

from __future__ import annotations

import dataclasses

import pytest

from callvault.ledger import ClaimOutcome, RecordingLedger, Status, ledger_key
from callvault.models import FetchJob, StoredObject
from tests.fakes import FakeTable


def job(call_id: str = "1.1", file_name: str = "a.wav", **changes: object) -> FetchJob:
    base = FetchJob(
        source_id="office-pbx",
        provider="pbx",
        call_id=call_id,
        call_time="2026-12-01T10:00:00+08:00",
        locator={"recording": file_name},
        file_name=file_name,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def stored(key: str = "recordings/a.wav") -> StoredObject:
    return StoredObject(bucket="b", key=key, size=3, sha256="ab" * 32, version_id="v1", content_type="audio/wav")


@pytest.fixture
def table() -> FakeTable:
    return FakeTable()


@pytest.fixture
def ledger(table: FakeTable) -> RecordingLedger:
    return RecordingLedger(table)


def test_a_file_is_claimed_by_one_delivery_at_a_time_and_never_again_once_stored(ledger: RecordingLedger) -> None:
    first = ledger.claim(job(), "a.wav", "recordings/a.wav", lease_seconds=60)
    second = ledger.claim(job(), "a.wav", "recordings/a.wav", lease_seconds=60)

    assert (first.outcome, second.outcome) == (ClaimOutcome.CLAIMED, ClaimOutcome.IN_PROGRESS)
    assert ledger.mark_stored(first, stored())
    assert ledger.claim(job(), "a.wav", "recordings/a.wav", lease_seconds=60).outcome is ClaimOutcome.ALREADY_STORED


def test_an_expired_lease_lets_another_delivery_take_over_and_the_first_loses_its_record(
    ledger: RecordingLedger, table: FakeTable
) -> None:
    first = ledger.claim(job(), "a.wav", "recordings/a.wav", lease_seconds=60)
    table.item("CALL#office-pbx#1.1", "FILE#a.wav")["lease_until"] = 0  # the first holder hung

    second = ledger.claim(job(), "a.wav", "recordings/a.wav", lease_seconds=60)

    assert second.outcome is ClaimOutcome.CLAIMED
    assert not ledger.mark_stored(first, stored())  # its lease is gone: the second one's record wins
    assert ledger.mark_stored(second, stored())
    assert table.item("CALL#office-pbx#1.1", "FILE#a.wav")["attempts"] == 2


def test_a_release_records_the_reason_but_never_overwrites_a_stored_file(
    ledger: RecordingLedger, table: FakeTable
) -> None:
    claim = ledger.claim(job(), "a.wav", "recordings/a.wav", lease_seconds=60)
    ledger.release(job(), claim.key, Status.RETRY_SCHEDULED, "HTTP 503", claim.lease_id)
    item = table.item("CALL#office-pbx#1.1", "FILE#a.wav")
    assert (item["status"], item["reason"], "lease_id" in item) == ("RETRY_SCHEDULED", "HTTP 503", False)

    again = ledger.claim(job(), "a.wav", "recordings/a.wav", lease_seconds=60)
    ledger.mark_stored(again, stored())
    ledger.release(job(), again.key, Status.FAILED, "late failure", None)

    assert table.item("CALL#office-pbx#1.1", "FILE#a.wav")["status"] == "STORED"


def test_the_status_index_holds_every_file_until_it_is_stored(ledger: RecordingLedger, table: FakeTable) -> None:
    claim = ledger.claim(job(), "a.wav", "recordings/a.wav", lease_seconds=60)
    ledger.release(job("2.2", "b.wav"), ledger_key(job("2.2", "b.wav")), Status.FAILED, "gone", None)
    assert table.item("CALL#office-pbx#1.1", "FILE#a.wav")["open_status"] == "DOWNLOADING"

    ledger.mark_stored(claim, stored())

    assert "open_status" not in table.item("CALL#office-pbx#1.1", "FILE#a.wav")
    assert [item["call_id"] for item in ledger.by_status(Status.FAILED)] == ["2.2"]
    assert list(ledger.by_status(Status.FAILED, source_id="other-source")) == []
    assert list(ledger.by_status(Status.FAILED, since="2999-01-01")) == []


def test_calls_of_a_source_are_found_by_their_local_call_date(ledger: RecordingLedger) -> None:
    for call_id, day in (("1", "2026-11-30"), ("2", "2026-12-01"), ("3", "2026-12-02")):
        ledger.mark_queued(job(call_id, call_time=f"{day}T23:30:00+08:00"), "test")

    found = ledger.by_call_date("office-pbx", "2026-12-01", "2026-12-02", attributes=("call_id",))

    assert [item["call_id"] for item in found] == ["2", "3"]


def test_handled_knows_named_files_and_what_each_selector_archived(ledger: RecordingLedger) -> None:
    ledger.mark_queued(job("1", "a.wav"), "test")
    mono = job("2", "*mono", locator={"contact_id": "2", "recording": "mono"})
    claim = ledger.claim(mono, "2.wav", "recordings/2.wav", lease_seconds=60)
    ledger.mark_stored(claim, stored("recordings/2.wav"))
    multichannel = dataclasses.replace(mono, file_name="*multichannel")

    handled = ledger.handled([job("1", "a.wav"), job("1", "b.wav"), mono, multichannel])

    assert handled == {job("1", "a.wav").identity, mono.identity}


def test_an_expectation_is_noted_once_and_only_for_a_call_the_ledger_does_not_know(
    ledger: RecordingLedger, table: FakeTable
) -> None:
    expected = job("9", "*", not_before="2026-12-01T10:30:00+00:00")
    assert ledger.expect(expected, "2026-12-01T10:30:00+00:00")
    assert not ledger.expect(expected, "2026-12-01T10:30:00+00:00")
    assert table.item("CALL#office-pbx#9", "FILE#*")["status"] == "EXPECTED"

    claim = ledger.claim(job("8", "x.mp3"), "x.mp3", "k", lease_seconds=60)
    ledger.mark_stored(claim, stored("k"))
    assert not ledger.expect(job("8", "*"), "2026-12-01T10:30:00+00:00")  # its recording came first
    assert not ledger.note_no_recording(job("8", "*"), "not answered")


def test_a_status_moves_only_from_what_the_mover_saw(ledger: RecordingLedger, table: FakeTable) -> None:
    ledger.release(job(), ledger_key(job()), Status.FAILED, "gone", None)

    assert ledger.move(ledger_key(job()), Status.FAILED, Status.QUEUED, "retry")
    assert not ledger.move(ledger_key(job()), Status.FAILED, Status.QUEUED, "retry again")
    ledger.annotate(ledger_key(job()), retried_by="ops")
    assert table.item("CALL#office-pbx#1.1", "FILE#a.wav")["retried_by"] == "ops"
    ledger.annotate({"pk": "CALL#nobody#0", "sk": "FILE#x"}, retried_by="ops")  # no item: nothing made
    assert ("CALL#nobody#0", "FILE#x") not in table.items
