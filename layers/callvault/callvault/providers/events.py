"""Reading a provider's webhook body: JSON events, the fields they spell several ways, jobs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from callvault.errors import BadRequest
from callvault.models import FetchJob


def json_events(body: bytes, shape: str) -> list[dict[str, Any]]:
    """A webhook body as a list of JSON objects: one object, or a list of them (providers batch).

    ``shape`` says what the provider sends, for the 400 message when the body is something else.
    """
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    events = document if isinstance(document, list) else [document]
    if not events or not all(isinstance(event, dict) for event in events):
        raise BadRequest(f"body must be {shape}")
    return events


def first_text(event: Mapping[str, Any], *names: str) -> str:
    """The first of ``names`` the event fills, as trimmed text ("" if none): providers spell a
    field several ways and send strings, numbers or nulls for it."""
    for name in names:
        value = event.get(name)
        if value not in (None, ""):
            return str(value).strip()
    return ""


@dataclass
class EventJobs:
    """What a webhook body's events came to."""

    jobs: list[FetchJob] = field(default_factory=list)
    skipped: int = 0  # events acknowledged without a job (no recording, not a call-ended event)
    problems: list[str] = field(default_factory=list)  # events that could not be read, when tolerated


def jobs_from_events(
    events: Iterable[Mapping[str, Any]],
    job_of: Callable[[Mapping[str, Any]], FetchJob | None],
    *,
    tolerate_bad: bool = False,
) -> EventJobs:
    """Each event's job (None: acknowledged, nothing to fetch). A bad event rejects the whole
    body, unless ``tolerate_bad``: then it is noted and the others still count."""
    result = EventJobs()
    for index, event in enumerate(events):
        try:
            job = job_of(event)
        except BadRequest as exc:
            if not tolerate_bad:
                raise
            result.problems.append(f"record {index}: {exc.message}")
            continue
        if job is None:
            result.skipped += 1
        else:
            result.jobs.append(job)
    return result
