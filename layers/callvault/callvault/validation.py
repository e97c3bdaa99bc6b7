"""Checks of configuration read at the edge (a sources file, a source's secret): one place, one
wording. Every error names where it was found (``source 'office-pbx', pbx``) and the field.

YAML and JSON give ``True`` where a number is expected as easily as a number, so a boolean
is never accepted as a number here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from callvault.errors import ConfigError


def reject_unknown(raw: Mapping[str, Any], known: Iterable[str], where: str, *, section: str = "") -> None:
    """A misspelt field must not be silently ignored: it would leave a default in place."""
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: {section + ' has ' if section else ''}unknown fields {', '.join(unknown)}")


def boolean(raw: Mapping[str, Any], name: str, default: bool, where: str, *, section: str = "") -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {section + '.' if section else ''}{name} must be true or false")
    return value


def number(
    raw: Mapping[str, Any],
    name: str,
    default: float | None,
    where: str,
    *,
    low: float,
    high: float,
    unit: str = "",
) -> float:
    """A number from ``low`` to ``high`` (``default`` when absent; None: required)."""
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{where}: {name} must be a number from {low:g} to {high:g}{unit}")
    return float(value)


def whole_number(
    raw: Mapping[str, Any], name: str, default: int | None, where: str, *, low: int, high: int | None = None
) -> int:
    """A whole number of at least ``low`` (and at most ``high``); ``default`` when absent."""
    value = raw.get(name, default)
    too_big = high is not None and isinstance(value, int) and value > high
    if isinstance(value, bool) or not isinstance(value, int) or value < low or too_big:
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ConfigError(f"{where}: {name} must be a whole number {bounds}")
    return value


def text(raw: Mapping[str, Any], name: str, where: str, *, hint: str = "") -> str:
    """A required, non-empty string."""
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {name} is required{f' ({hint})' if hint else ''}")
    return value


def optional_text(raw: Mapping[str, Any], name: str, where: str, *, hint: str) -> str | None:
    """A string when given (never empty), else None."""
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {name} must be {hint}")
    return value


def section(raw: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    value = raw.get(name)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: a '{name}' section with the provider settings is required")
    return value
