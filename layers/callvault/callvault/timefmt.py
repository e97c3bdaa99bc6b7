"""Provider time strings to and from aware datetimes (providers speak local wall-clock time)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

WALL_CLOCK = "%Y-%m-%d %H:%M:%S"
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_wall_clock(value: str, zone: ZoneInfo) -> datetime:
    """``yyyy-mm-dd hh:mm:ss`` in the provider's zone; raises ValueError with the bad value."""
    try:
        naive = datetime.strptime(value.strip(), WALL_CLOCK)
    except (AttributeError, ValueError):
        raise ValueError(f"time {value!r} is not 'yyyy-mm-dd hh:mm:ss'") from None
    return naive.replace(tzinfo=zone)


def format_wall_clock(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime(WALL_CLOCK)


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def parse_duration(value: object) -> timedelta:
    """``90`` (seconds), ``"90s"``, ``"15m"``, ``"2h"`` or ``"1d"``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f"{value!r} is not a duration like 90s, 15m, 2h or 1d")
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{value!r} is not a duration like 90s, 15m, 2h or 1d")
    return timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])


def format_duration(span: timedelta) -> str:
    """The shortest exact form ``parse_duration`` reads back (``2h``, ``90s``)."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
