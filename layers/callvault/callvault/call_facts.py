"""What is known about a call, beyond its recordings: when it started and ended (in UTC and in the
source's zone), how long it lasted, its direction, and who took part.

The facts come from the job's ``details`` as the provider reported them (a PBX NewCdr or CDR
row, a Dypls call report); a provider that says nothing of a fact (a CCC recording event has no
numbers) leaves it null. Participants come out only as the source's ``ParticipantPolicy`` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from callvault.models import FetchJob
from callvault.participants import MASK, ParticipantPolicy, name_for_archive

# Fields of ``FetchJob.details`` that hold a participant's number, and the role it plays: a PBX
# report's callfrom/callto; a Dypls report's real numbers (phone_no, peer_no) and the privacy
# number between them (secret_no).
PARTICIPANT_FIELDS = (
    ("callfrom", "caller"),
    ("callto", "callee"),
    ("phone_no", "subscriber"),
    ("peer_no", "peer"),
    ("secret_no", "privacy_number"),
)
# A PBX report's ``type``.
DIRECTIONS = {"inbound": "inbound", "outbound": "outbound", "internal": "internal"}
# Set by a provider that knows when the call ended (ISO 8601); else start + ``callduraction``.
ENDED_AT = "ended_at"


def participant_numbers(job: FetchJob) -> list[str]:
    return [job.details[name] for name, _ in PARTICIPANT_FIELDS if job.details.get(name, "").strip()]


def stored_name(job: FetchJob, file_name: str, policy: ParticipantPolicy | None) -> str:
    """The name a file of the job is stored and announced under: the provider's, with the call's
    participant numbers in it masked unless the source keeps them (a PBX names its recordings
    ``exten-13800138000-02161234567-….wav``). The ledger keeps the provider's name: that is the
    file's identity, the same before and after a policy changes. No policy known: masked."""
    return name_for_archive(file_name, participant_numbers(job), policy or ParticipantPolicy(MASK))


def loggable(job: FetchJob) -> str:
    """The job's identity for a log line: its participant numbers masked, whatever the policy."""
    return name_for_archive(job.identity, participant_numbers(job), ParticipantPolicy(MASK))


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def call_started_at(job: FetchJob) -> datetime:
    started = datetime.fromisoformat(job.call_time)
    return started if started.tzinfo else started.replace(tzinfo=UTC)


def call_ended_at(job: FetchJob) -> datetime | None:
    """When the call ended, if the provider said: a time it reported, or its start plus the
    duration it reported (a PBX's ``callduraction``)."""
    ended = job.details.get(ENDED_AT, "")
    if ended:
        try:
            moment = datetime.fromisoformat(ended)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    duration = job.details.get("callduraction", "")
    if duration.isdigit() and len(duration) <= 7:  # at most ~100 days: a real call, not a hostile number
        return call_started_at(job) + timedelta(seconds=int(duration))
    return None


@dataclass(frozen=True)
class CallFacts:
    started_at: datetime
    ended_at: datetime | None
    timezone: ZoneInfo | None
    direction: str | None
    participants: tuple[tuple[str, str], ...]  # (role, number as the provider reported it)

    @property
    def duration_seconds(self) -> int | None:
        if self.ended_at is None or self.ended_at < self.started_at:
            return None
        return int((self.ended_at - self.started_at).total_seconds())

    def to_dict(self, policy: ParticipantPolicy | None) -> dict[str, Any]:
        """The ``call`` object of events and sidecars. ``policy`` None (the source cannot be
        read): no participants at all rather than numbers under an unknown policy."""
        zone = self.timezone or UTC

        def local(moment: datetime | None) -> str | None:
            return moment.astimezone(zone).isoformat(timespec="seconds") if moment else None

        return {
            "started_at": utc_text(self.started_at),
            "started_at_local": local(self.started_at),
            "timezone": str(zone),
            "ended_at": utc_text(self.ended_at) if self.ended_at else None,
            "ended_at_local": local(self.ended_at),
            "duration_seconds": self.duration_seconds,
            "direction": self.direction,
            "participants": [{"role": role, "number": policy.apply(number)} for role, number in self.participants]
            if policy
            else [],
        }


def facts_of(job: FetchJob, zone: ZoneInfo | None) -> CallFacts:
    return CallFacts(
        started_at=call_started_at(job),
        ended_at=call_ended_at(job),
        timezone=zone,
        direction=DIRECTIONS.get(job.details.get("type", "").strip().lower()),
        participants=tuple(
            (role, job.details[name]) for name, role in PARTICIPANT_FIELDS if job.details.get(name, "").strip()
        ),
    )
