"""Provider time strings to and from aware datetimes (providers speak local wall-clock time)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

WALL_CLOCK = "%Y-%m-%d %H:%M:%S"
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# When a call can have happened: no provider keeps a recording for years (30 days at most), so
# a time outside this span is a broken clock or a hostile report, never a call to archive;
# a day of slack ahead covers a provider clock or time zone set wrong. Checking it up front
# also keeps date arithmetic (call time + retention) away from year 9999.
EARLIEST_CALL = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_CALL_AHEAD = timedelta(days=1)


def parse_wall_clock(value: str, zone: ZoneInfo) -> datetime:
    """``yyyy-mm-dd hh:mm:ss`` in the provider's zone; raises ValueError with the bad value."""
    try:
        naive = datetime.strptime(value.strip(), WALL_CLOCK)
    except (AttributeError, ValueError):
        raise ValueError(f"time {value!r} is not 'yyyy-mm-dd hh:mm:ss'") from None
    return naive.replace(tzinfo=zone)


def plausible_call_time(moment: datetime) -> datetime:
    """``moment`` if a call can have happened then (from 2000 to a day ahead of our clock);
    raises ValueError saying why not."""
    if not EARLIEST_CALL <= moment <= utc_now() + LATEST_CALL_AHEAD:
        raise ValueError(
            f"{moment.isoformat(timespec='seconds')} is not a plausible call time"
            " (accepted: from 2000 to a day ahead of now)"
        )
    return moment


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
