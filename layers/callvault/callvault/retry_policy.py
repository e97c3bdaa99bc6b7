"""When to try a failed fetch again, and when to give up: the one retry policy.

The fetcher applies it and hands the plan to the Step Functions workflow, which waits,
re-enqueues the job, or marks it FAILED and notifies operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from callvault.config import RetrySettings
from callvault.errors import FetchError, RetryKind, RetryLater
from callvault.models import FetchJob

# A recording that is not ready yet usually needs minutes (Dypls: 15–20), so its backoff
# starts higher; everything else doubles from the base delay.
FIRST_DELAY_FACTOR = {RetryKind.NOT_READY: 5}


@dataclass(frozen=True)
class RetryPlan:
    give_up: bool
    wait_seconds: int
    reason: str
    error: str
    # Giving up on a call nothing confirmed was recorded is not a failure: it had no recording.
    no_recording: bool = False


def plan_retry(job: FetchJob, error: FetchError, policy: RetrySettings, now: datetime) -> RetryPlan:
    """Back off exponentially for transient errors; give up on permanent ones, when attempts
    run out, or when the next try would fall after the provider's retention deadline.

    A job whose recording no provider message confirmed (``recording_confirmed`` False) that
    gives up while the provider still answers "no such recording" ends NO_RECORDING instead of
    FAILED: the call had none.
    """
    if not isinstance(error, RetryLater):
        return RetryPlan(True, 0, error.reason, "PermanentFailure")
    never_appeared = not job.recording_confirmed and error.kind is RetryKind.NOT_READY
    factor = FIRST_DELAY_FACTOR.get(error.kind, 1)
    wait = min(policy.max_delay_seconds, policy.base_delay_seconds * factor * 2 ** (job.attempt - 1))
    if job.attempt >= policy.max_attempts:
        reason = f"gave up after {job.attempt} attempts: {error.reason}"
        return RetryPlan(True, 0, reason, error.kind.value, never_appeared)
    if job.give_up_at and now + timedelta(seconds=wait) > datetime.fromisoformat(job.give_up_at):
        reason = f"provider retention ends {job.give_up_at} before the next try: {error.reason}"
        return RetryPlan(True, 0, reason, error.kind.value, never_appeared)
    return RetryPlan(False, wait, error.reason, error.kind.value)
