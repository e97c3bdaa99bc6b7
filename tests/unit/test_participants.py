"""Participants' phone numbers leave callvault as each source chooses (keep, mask, hash), and the
choice is validated at the edge like every source setting."""

from __future__ import annotations

import hmac

import pytest

from callvault.call_facts import facts_of, loggable, stored_name
from callvault.errors import ConfigError
from callvault.models import FetchJob
from callvault.participants import ParticipantPolicy, normalised
from callvault.providers.pbx import job_from_cdr
from callvault.sources import parse_source, webhook_document
from tests.conftest import pbx_source_document

KEY = "a-key-of-32-characters-for-hmacs"


def test_masking_keeps_the_last_four_digits_only() -> None:
    mask = ParticipantPolicy("mask")
    assert mask.apply("+86 138-0013-8000") == "***8000"
    assert mask.apply("1001") == "***"  # an extension: nothing worth keeping


def test_hashing_gives_one_value_per_number_however_it_is_written_and_needs_the_key() -> None:
    policy = ParticipantPolicy("hash", KEY)
    expected = "hmac-sha256:" + hmac.new(KEY.encode(), b"+8613800138000", "sha256").hexdigest()

    assert policy.apply("+86 138-0013-8000") == policy.apply("+8613800138000") == expected
    assert policy.apply("8613800138000") != expected  # dialled without the plus: another number
    assert ParticipantPolicy("hash", "another-key-of-16+chars").apply("+8613800138000") != expected
    assert normalised("+86 (138) 0013-8000 ext") == "+8613800138000"


def test_a_source_masks_by_default_and_hashes_only_with_a_key() -> None:
    assert parse_source(pbx_source_document()).participants == ParticipantPolicy("mask")
    source = parse_source(pbx_source_document(participants="hash", participants_hash_key=KEY))
    assert source.participants == ParticipantPolicy("hash", KEY)
    assert parse_source(pbx_source_document(participants="keep")).participants.mode == "keep"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"participants": "hash"}, "participants: hash needs participants_hash_key"),
        ({"participants": "encrypt"}, "participants must be one of keep, mask, hash"),
        ({"participants": "hash", "participants_hash_key": "short"}, "at least 16 characters"),
        ({"participants_hash_key": 1234567890123456}, "participants_hash_key must be a string"),
        ({"retention_class": "forever"}, "retention_class must be one of standard, archive, archive-then-expire"),
    ],
)
def test_bad_participant_and_retention_settings_name_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_source(pbx_source_document(**change))


def test_the_webhooks_copy_of_a_source_never_holds_the_hash_key() -> None:
    document = pbx_source_document(participants="hash", participants_hash_key=KEY)

    copy = webhook_document(document)

    assert "participants_hash_key" not in copy and copy["participants"] == "hash"
    assert parse_source(copy, credentials=False).participants.mode == "hash"
    with pytest.raises(ConfigError, match="must not hold participants_hash_key"):
        parse_source({**copy, "participants_hash_key": KEY}, credentials=False)


def test_call_facts_come_from_what_the_provider_reported() -> None:
    job = FetchJob(
        source_id="pool",
        provider="dypls",
        call_id="c1",
        call_time="2026-12-01T10:00:00+08:00",
        locator={},
        details={
            "phone_no": "13800138000",
            "peer_no": "13900139000",
            "secret_no": "17000000000",
            "ended_at": "2026-12-01T10:02:05+08:00",
        },
    )
    facts = facts_of(job, None).to_dict(ParticipantPolicy("keep"))

    assert facts["duration_seconds"] == 125 and facts["ended_at"] == "2026-12-01T02:02:05Z"
    assert [p["role"] for p in facts["participants"]] == ["subscriber", "peer", "privacy_number"]
    assert facts["direction"] is None  # Dypls does not say
    # A source that cannot be read: no numbers at all rather than numbers under an unknown policy.
    assert facts_of(job, None).to_dict(None)["participants"] == []


@pytest.mark.parametrize(
    ("policy", "stored_as"),
    [
        ("keep", "exten-13800138000-02161234567-20261202-220541-1796220341.1772.wav"),
        ("mask", "exten-xxxxxxx8000-xxxxxxx4567-20261202-220541-1796220341.1772.wav"),
        ("hash", "exten-xxxxxxx8000-xxxxxxx4567-20261202-220541-1796220341.1772.wav"),
    ],
)
def test_numbers_a_pbx_writes_into_a_file_name_are_masked_where_it_is_stored_unless_the_source_keeps_them(
    policy: str, stored_as: str
) -> None:
    raw = "exten-13800138000-02161234567-20261202-220541-1796220341.1772.wav"
    extra = {"participants_hash_key": KEY} if policy == "hash" else {}
    source = parse_source(pbx_source_document(participants=policy, **extra))
    report = {
        "callid": "1796220341.1772",
        "timestart": "2026-12-02 22:05:41",
        "callfrom": "13800138000",
        "callto": "02161234567",
        "recording": f"2026/12/02/{raw}",
    }

    job = job_from_cdr(source, report)

    assert job is not None
    assert stored_name(job, job.file_name, source.participants) == stored_as
    # The file's identity in the ledger, and what the PBX is asked for, stay the PBX's own name:
    # a policy changed later does not make an archived recording look new.
    assert job.file_name == raw and job.locator == {"recording": f"2026/12/02/{raw}"}
    assert "13800138000" not in loggable(job) and "02161234567" not in loggable(job)
