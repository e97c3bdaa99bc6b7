"""Object keys are built from sanitised parts; the retry policy backs off and gives up explicitly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from callvault.config import RetrySettings
from callvault.errors import PermanentFailure, RetryKind, RetryLater
from callvault.keys import content_type_for, recording_key
from callvault.models import FetchJob
from callvault.retry_policy import plan_retry

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = RetrySettings(max_attempts=4, base_delay_seconds=10, max_delay_seconds=60)


def job(attempt: int = 1, give_up_at: str | None = None) -> FetchJob:
    return FetchJob(
        source_id="office-pbx",
        provider="pbx",
        call_id="1.2",
        call_time="2020-05-05T04:21:35+08:00",
        locator={"recording": "a.wav"},
        file_name="a.wav",
        attempt=attempt,
        give_up_at=give_up_at,
    )


def test_key_uses_the_local_call_date_and_sanitised_parts() -> None:
    key = recording_key("office-pbx", "2020-05-05T00:21:35+08:00", "../../etc", "my call?.wav")

    assert key == "recordings/office-pbx/2020/05/05/_.._etc~74ccf3c5/my_call_~38efdb55.wav"


def test_names_that_had_to_change_cannot_collide_with_names_that_did_not() -> None:
    keys = {recording_key("s", "2020-05-05T00:00:00+00:00", "c", name) for name in ("a b.wav", "a_b.wav", "a?b.wav")}

    assert len(keys) == 3
    assert "recordings/s/2020/05/05/c/a_b.wav" in keys  # a name that needs no change keeps it


def test_content_type_prefers_the_declared_audio_type() -> None:
    assert content_type_for("a.wav", "audio/x-wav; charset=binary") == "audio/x-wav"
    assert content_type_for("a.mkv", "application/octet-stream") == "audio/x-matroska"
    assert content_type_for("a.bin", None) == "application/octet-stream"


def test_transient_errors_back_off_exponentially_up_to_the_cap() -> None:
    waits = [
        plan_retry(job(n), RetryLater(RetryKind.THROTTLED, "slow down"), POLICY, NOW).wait_seconds for n in (1, 2, 3)
    ]

    assert waits == [10, 20, 40]


def test_not_ready_recordings_wait_longer_first() -> None:
    plan = plan_retry(job(1), RetryLater(RetryKind.NOT_READY, "not yet"), POLICY, NOW)

    assert plan.wait_seconds == 50 and not plan.give_up


def test_attempts_run_out_with_a_reason() -> None:
    plan = plan_retry(job(4), RetryLater(RetryKind.LINK_EXPIRED, "link expired"), POLICY, NOW)

    assert plan.give_up and "after 4 attempts: link expired" in plan.reason


def test_a_retry_past_the_retention_deadline_gives_up_now() -> None:
    deadline = (NOW + timedelta(seconds=5)).isoformat()

    plan = plan_retry(job(1, give_up_at=deadline), RetryLater(RetryKind.NOT_READY, "not yet"), POLICY, NOW)

    assert plan.give_up and "retention ends" in plan.reason


def test_permanent_failures_give_up_at_once() -> None:
    plan = plan_retry(job(1), PermanentFailure("bad credentials"), POLICY, NOW)

    assert plan.give_up and plan.reason == "bad credentials" and plan.error == "PermanentFailure"
