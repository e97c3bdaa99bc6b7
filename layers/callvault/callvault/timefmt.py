"""Provider time strings to and from aware datetimes (providers speak local wall-clock time)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

WALL_CLOCK = "%Y-%m-%d %H:%M:%S"


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
