"""Reading a provider's webhook body: JSON events, the values in them, the jobs they make.

This is the one place that says what a webhook body and the values read from it may be, for
every provider and for reconciliation (which reads the providers' own listings through the
same functions). Whatever is refused here is refused before anything is enqueued or written:

- the body as a whole: JSON (``Content-Type``, when sent, must say so: every provider's docs
  say it sends ``application/json``), nested at most ``MAX_JSON_DEPTH`` deep (checked before
  parsing, so a hostile body cannot exhaust the parser's recursion), at most
  ``MAX_EVENTS_PER_REQUEST`` events;
- an id (``event_id``): text or a whole number (never a boolean, a float or an object: a float
  id loses digits, an object has no id), printable ASCII, at most ``MAX_ID_LENGTH`` long;
- a file name (``event_file_name``): printable text, no ``..`` segment, at most ``MAX_NAME_BYTES``;
- any other text (``first_text``): text or a number, printable, at most ``MAX_TEXT_LENGTH``.
"Printable" leaves out control, format (bidi overrides and isolates, zero-width), surrogate,
private-use and unassigned characters: what SQS refuses, what a log or a console would show
as something else, and what has no business in a call record.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from callvault.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from callvault.models import FetchJob
from callvault.providers.interface import InboundRequest

# The largest batch any vendor doc names is 100 records (CCC ListCallDetailRecords pages; a
# PBX and CCC push one event at a time, Dypls documents no batch size). 100 jobs are ten SQS
# SendMessageBatch calls: enqueued well inside Dypls's 700 ms and the function's timeout.
MAX_EVENTS_PER_REQUEST = 100
# Provider events are flat (a list of objects of scalars); 32 levels leave room for any vendor
# extension and stay far below the parser's recursion limit.
MAX_JSON_DEPTH = 32
# Vendor ids are a few dozen ASCII characters (Dypls call_id 32 hex digits, CCC contact ids,
# PBX "1588641695.1772"). A call id is part of the ledger's partition key (DynamoDB: 2,048
# bytes), of the job on SQS and of the object's S3 metadata (2 KB in all, ASCII headers).
MAX_ID_LENGTH = 256
# A file name ends up in the ledger's sort key, "FILE#{name}" (DynamoDB: 1,024 bytes).
MAX_NAME_BYTES = 512
# Other text (numbers, trunk names, out_id) is copied into the job: short keeps a batch of ten
# jobs far below SQS's 256 KiB per SendMessageBatch.
MAX_TEXT_LENGTH = 256
JSON_MEDIA = re.compile(r"^application/(?:[\w.+-]+\+)?json$")
_STRUCTURE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
# Unicode categories that never belong in a provider value: control, format (bidi overrides
# and isolates, zero-width), surrogate, private use, unassigned; line and paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def json_events(request: InboundRequest, shape: str) -> list[dict[str, Any]]:
    """A webhook body as a list of JSON objects: one object, or a list of them (providers batch).

    ``shape`` says what the provider sends, for the 400 message when the body is something else.
    """
    _require_json_content_type(request.headers.get("content-type", ""))
    if _nested_deeper_than(request.body, MAX_JSON_DEPTH):
        raise BadRequest(f"body nests arrays or objects more than {MAX_JSON_DEPTH} levels deep")
    try:
        document = json.loads(request.body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    events = document if isinstance(document, list) else [document]
    if not events or not all(isinstance(event, dict) for event in events):
        raise BadRequest(f"body must be {shape}")
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise PayloadTooLarge(
            f"body holds {len(events)} events; at most {MAX_EVENTS_PER_REQUEST} per request are accepted"
            " (send them in several requests)"
        )
    return events


def _require_json_content_type(header: str) -> None:
    """A declared Content-Type must be JSON in UTF-8; none declared reads the body as JSON."""
    if not header.strip():
        return
    media, *parameters = (part.strip().lower() for part in header.split(";"))
    if not JSON_MEDIA.match(media):
        raise UnsupportedMediaType(f"Content-Type {media[:80]!r} is not accepted; send application/json")
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(f"charset {value.strip()[:40]!r} is not accepted; send UTF-8 JSON")


def _nested_deeper_than(body: bytes, limit: int) -> bool:
    """True when arrays and objects nest deeper than ``limit``, counted without parsing
    (brackets inside strings do not count)."""
    depth = 0
    for match in _STRUCTURE.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def unprintable(text: str) -> str | None:
    """The first character of ``text`` that must not travel on, described; None if all may."""
    for char in text:
        if unicodedata.category(char) in _UNPRINTABLE:
            name = unicodedata.name(char, "") if unicodedata.category(char) != "Cs" else "a lone surrogate"
            return f"U+{ord(char):04X}" + (f" ({name.lower()})" if name else "")
    return None


def _scalar_text(value: Any, field_name: str) -> str:
    """A value as trimmed text: strings and numbers, nothing that only looks like one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadRequest(f"{field_name} must be text or a number, got {_kind(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"{field_name} must be text or a number, got {value}")
    return (value if isinstance(value, str) else str(value)).strip()


def _kind(value: Any) -> str:
    return {bool: "true/false", dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _first(event: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, Any]:
    for name in names:
        value = event.get(name)
        if value not in (None, ""):
            return name, value
    return names[0] if names else "", None


def first_text(event: Mapping[str, Any], *names: str) -> str:
    """The first of ``names`` the event fills, as trimmed text ("" if none): providers spell a
    field several ways and send strings, numbers or nulls for it."""
    name, value = _first(event, names)
    if value is None:
        return ""
    text = _scalar_text(value, name)
    if len(text) > MAX_TEXT_LENGTH:
        raise BadRequest(f"{name} is {len(text)} characters long; at most {MAX_TEXT_LENGTH} are accepted")
    bad = unprintable(text)
    if bad:
        raise BadRequest(f"{name} contains {bad}")
    return text


def event_id(event: Mapping[str, Any], *names: str) -> str:
    """The first of ``names`` the event fills, as an id ("" if none): text or a whole number,
    printable ASCII, at most ``MAX_ID_LENGTH`` characters."""
    name, value = _first(event, names)
    if value is None:
        return ""
    if isinstance(value, float):
        raise BadRequest(f"{name} must be text or a whole number, got the number {value} (an id cannot be a float)")
    text = _scalar_text(value, name)
    if len(text) > MAX_ID_LENGTH:
        raise BadRequest(f"{name} is {len(text)} characters long; an id has at most {MAX_ID_LENGTH}")
    for char in text:
        if not " " <= char <= "~":
            raise BadRequest(f"{name} contains {unprintable(char) or f'U+{ord(char):04X}'}; an id is printable ASCII")
    return text


def event_file_name(event: Mapping[str, Any], *names: str) -> str:
    """The first of ``names`` the event fills, as a provider's file name ("" if none): printable
    text without a ``..`` segment, at most ``MAX_NAME_BYTES`` in UTF-8."""
    name, value = _first(event, names)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be text, got {_kind(value)}")
    text = value.strip()
    bad = unprintable(text)
    if bad:
        raise BadRequest(f"{name} contains {bad}")
    if len(text.encode()) > MAX_NAME_BYTES:
        raise BadRequest(f"{name} is {len(text.encode())} bytes long; a file name has at most {MAX_NAME_BYTES}")
    if ".." in re.split(r"[/\\]", text):
        raise BadRequest(f"{name} has a '..' segment; a provider's file name never climbs out of its folder")
    return text


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
