"""What playing a provider locally means: a simulator started for a source of the sources file,
and calls that end the way that provider reports them.

Each simulator package has a ``source`` module with its ``SimulatedSource``; the registry in
:mod:`local.simulated_providers` lists them. A ``SimulatedSource`` is made for a source whose
provider address (a PBX ``base_url``, a CCC or Dypls ``endpoint``) is on loopback, with that
source's credentials, so the sources file alone describes the local world.

``place_call`` makes a call end the way the real provider reports it and returns the files the
archive should end up with; with ``lose_push`` the report goes missing the way it does in real
life, and only reconciliation can find the recording.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self
from urllib.parse import quote, urlsplit

# Locally recordings become ready after a moment, not after the vendors' minutes.
READY_AFTER_S = 1.0


@dataclass(frozen=True)
class ExpectedFile:
    """A recording the archive should end up with. ``file_name`` None: named by the provider's link."""

    call_id: str
    file_name: str | None
    size: int
    sha256: str


class Simulator(Protocol):
    @property
    def base_url(self) -> str: ...

    def start(self) -> Any: ...

    def stop(self) -> None: ...


class SimulatedSource(Protocol):
    """One source played by a simulator; the class says which provider and what the demo does."""

    provider: str  # the core provider's name
    demo_calls: tuple[float, ...]  # talk seconds of the calls `make demo` ends on such a source
    source_id: str

    @classmethod
    def for_source(cls, raw: Mapping[str, Any]) -> Self | None:
        """A simulation for this source document, or None when its provider is not on loopback."""
        ...

    @property
    def simulator(self) -> Simulator: ...

    def place_call(self, webhook_url: str, duration_s: float, *, lose_push: bool = False) -> list[ExpectedFile]: ...


def on_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_of(url: str) -> int:
    """The port of a simulator's address; 0 asks for any free one (tests)."""
    parts = urlsplit(url)
    if parts.port is not None:
        return parts.port
    return 443 if parts.scheme == "https" else 80


def bound_document(raw: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """A source document whose loopback addresses point at the simulator actually listening
    (``base_url``): a sources file may give port 0 to let each simulator take a free port."""
    bound = urlsplit(base_url).netloc

    def rebind(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(("http://", "https://")) and on_loopback(value):
            return urlsplit(value)._replace(netloc=bound).geturl()
        if isinstance(value, Mapping):
            return {key: rebind(item) for key, item in value.items()}
        return value

    return {key: rebind(value) for key, value in raw.items()}


def with_token(webhook_url: str, token: str) -> str:
    """The webhook URL as a provider that cannot send headers is given it."""
    return f"{webhook_url}?token={quote(token, safe='')}"
