"""Domain records that travel between the functions: the fetch job and what a fetch produced."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from callvault.errors import ConfigError

# A job whose files are only known once the provider lists them (a CCC contact with
# transfers, a Dypls call) carries a selector instead of a file name: "*" for every file of
# the call, or "*" + a kind ("*mono"). The ledger tracks it under that name until resolved.
WHOLE_CALL = "*"


# Who made a job: a provider's push (through the webhook), reconciliation (the provider's own
# record of calls showed a recording the ledger lacked), or an operator (``callvault retry``).
ORIGIN_PUSH = "push"
ORIGIN_RECONCILIATION = "reconciliation"
ORIGIN_OPERATOR = "operator"
ORIGINS = frozenset({ORIGIN_PUSH, ORIGIN_RECONCILIATION, ORIGIN_OPERATOR})


# Far more than a job can reach (a deferral waits up to a minute, SQS keeps a message 4 days).
MAX_DEFERRALS = 100_000


def is_selector(file_name: str) -> bool:
    return file_name.startswith(WHOLE_CALL)


class InvalidJob(ConfigError):
    """A queue message that is not a well-formed FetchJob."""


@dataclass(frozen=True)
class FetchJob:
    """One unit of archiving work: fetch the recording file(s) of one call from one source.

    ``locator`` carries what the provider needs to resolve a download URL at fetch time
    (a PBX recording name, a CCC contact id or file name, a Dypls call id and pool key);
    URLs themselves are never queued because they expire and are bearer credentials.

    Two kinds of job only leave a note in the ledger instead of fetching:
    - ``not_before``: the call ended and should have a recording, but its own announcement (a
      Dypls recording receipt) is still expected; the ledger keeps it EXPECTED and
      reconciliation fetches it if nothing arrived by then;
    - ``no_recording``: the provider reported the call but it cannot have a recording (it was
      never answered): the ledger records NO_RECORDING with this reason.
    ``recording_confirmed`` is False when nothing from the provider said a recording exists (a
    call-ended report): if the provider still has none when retries run out, the call ends
    NO_RECORDING rather than FAILED. ``deferrals`` and ``waiting_since``: the job waited for one
    of its source's fetch slots (``defer``).
    """

    source_id: str
    provider: str
    call_id: str
    call_time: str
    locator: dict[str, str]
    file_name: str = WHOLE_CALL
    attempt: int = 1
    reported_at: str = ""
    give_up_at: str | None = None
    details: dict[str, str] = field(default_factory=dict)
    origin: str = ORIGIN_PUSH
    not_before: str | None = None
    no_recording: str | None = None
    recording_confirmed: bool = True
    # Times the job found every fetch slot of its source taken and went back to the queue
    # (callvault.fetch_slots), and since when it waits: neither costs an attempt.
    deferrals: int = 0
    waiting_since: str | None = None

    @property
    def names_a_file(self) -> bool:
        """True when the file is known before asking the provider (claim it up front)."""
        return not is_selector(self.file_name)

    @property
    def identity(self) -> str:
        """Stable name of the work, the same for every delivery of the same report."""
        return f"{self.source_id}/{self.call_id}/{self.file_name}"

    def fetch_now(self, origin: str) -> FetchJob:
        """This job as a plain fetch made by ``origin``, with a fresh attempt budget."""
        return replace(self, attempt=1, origin=origin, not_before=None, deferrals=0, waiting_since=None)

    def defer(self, since: str) -> FetchJob:
        """This job, back in the queue because its source's slots were all taken: the same
        attempt, one more deferral, waiting since its first one."""
        return replace(
            self, deferrals=min(MAX_DEFERRALS, self.deferrals + 1), waiting_since=self.waiting_since or since
        )

    def next_attempt(self) -> FetchJob:
        return replace(self, attempt=self.attempt + 1, deferrals=0, waiting_since=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: Any) -> FetchJob:
        if not isinstance(raw, dict):
            raise InvalidJob("fetch job must be a JSON object")
        required = ("source_id", "provider", "call_id", "call_time", "locator")
        missing = [name for name in required if not raw.get(name)]
        if missing:
            raise InvalidJob(f"fetch job lacks {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidJob(f"fetch job has unknown fields {', '.join(unknown)}")
        locator = raw["locator"]
        if not isinstance(locator, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in locator.items()
        ):
            raise InvalidJob("fetch job locator must map strings to strings")
        details = raw.get("details", {})
        if not isinstance(details, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in details.items()
        ):
            raise InvalidJob("fetch job details must map strings to strings")
        attempt = raw.get("attempt", 1)
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise InvalidJob("fetch job attempt must be a positive integer")
        deferrals = raw.get("deferrals", 0)
        if not isinstance(deferrals, int) or isinstance(deferrals, bool) or not 0 <= deferrals <= MAX_DEFERRALS:
            raise InvalidJob(f"fetch job deferrals must be a whole number from 0 to {MAX_DEFERRALS}")
        for name in ("call_time", "not_before", "give_up_at", "waiting_since"):
            if raw.get(name) is not None:
                try:
                    moment = datetime.fromisoformat(raw[name])
                except (TypeError, ValueError) as exc:
                    raise InvalidJob(f"fetch job {name} is not ISO 8601: {raw[name]!r}") from exc
                if name != "call_time" and moment.tzinfo is None:
                    # Compared with the clock (aware): a time without a zone would fail every delivery.
                    raise InvalidJob(f"fetch job {name} has no time zone: {raw[name]!r}")
        origin = raw.get("origin", ORIGIN_PUSH)
        if not isinstance(origin, str) or origin not in ORIGINS:
            raise InvalidJob(f"fetch job origin must be one of {', '.join(sorted(ORIGINS))}")
        if not isinstance(raw.get("recording_confirmed", True), bool):
            raise InvalidJob("fetch job recording_confirmed must be true or false")
        for name in ("call_id", "file_name", "reported_at", "no_recording"):
            if raw.get(name) is not None and not isinstance(raw[name], str):
                raise InvalidJob(f"fetch job {name} must be a string")
        return cls(**raw)

    @classmethod
    def from_json(cls, body: str) -> FetchJob:
        try:
            raw = json.loads(body)
        except json.JSONDecodeError as exc:
            raise InvalidJob(f"fetch job is not JSON: {exc}") from exc
        return cls.from_dict(raw)


@dataclass(frozen=True)
class StoredObject:
    """What landed in S3, as measured while streaming."""

    bucket: str
    key: str
    size: int
    sha256: str
    version_id: str | None
    content_type: str
