"""The provider interface: what a provider is, and the source it serves.

One module per provider (``pbx``, ``ccc``, ``dypls``) implements ``Provider``: how its source
settings look, how its call-ended events read (a webhook body into ``FetchJob``s and the reply the
provider expects), and how a job becomes downloads at fetch time. Two duties are optional:
- ``CallLister``: a provider with a record of its calls (PBX CDRs, CCC call detail records) lists
  the calls of a time window, so reconciliation can archive what a lost push never announced;
- ``SessionKeeper``: a provider that pushes reports only while an API session lives (a PBX) keeps
  it alive on a schedule.

A ``Source`` is one registered PBX, call-centre instance or number pool: it carries its provider,
so nothing needs to look a provider up by name once the source is parsed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from callvault.participants import ParticipantPolicy

if TYPE_CHECKING:
    from callvault.http import HttpClients
    from callvault.models import FetchJob
    from callvault.provider_state import ProviderState


@dataclass(frozen=True)
class ReconcileSettings:
    """When reconciliation looks for calls whose push was lost, and how far back.

    ``wait_for_push`` is how long after a call ended its push may still be on its way (for a
    Dypls pool: how long its recording receipt may take); ``overlap`` re-reads that much before
    the last checkpoint, so a long call that ended after the previous run is still found;
    ``first_lookback`` is how far back the very first run reads. Providers set the defaults.
    """

    enabled: bool = True
    interval: timedelta = timedelta(minutes=15)
    wait_for_push: timedelta = timedelta(minutes=10)
    overlap: timedelta = timedelta(hours=2)
    first_lookback: timedelta = timedelta(days=1)


@dataclass(frozen=True)
class Source:
    """One registered source. ``settings`` is its provider's own typed settings object."""

    id: str
    provider: Provider
    webhook_token: str
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    max_body_bytes: int
    timezone: ZoneInfo
    retention_days: int | None
    webhook_signing_secret: str | None
    settings: Any
    reconcile: ReconcileSettings = ReconcileSettings()
    # How participants' numbers leave callvault (sidecars, events); see callvault.participants.
    participants: ParticipantPolicy = field(default_factory=ParticipantPolicy)
    # The lifecycle its objects follow (an S3 tag; callvault.retention).
    retention_class: str = "standard"
    # Downloads of this source at once, across every fetcher (callvault.fetch_slots).
    max_concurrent_fetches: int = 5

    def allows_ip(self, address: str) -> bool:
        """True when no allowlist is configured or ``address`` is inside it."""
        if not self.allowed_networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.allowed_networks)


@dataclass(frozen=True)
class InboundRequest:
    """A webhook request as the core sees it, independent of API Gateway's event shape."""

    source_id: str
    body: bytes
    headers: Mapping[str, str]  # lower-cased names
    query: Mapping[str, str]
    source_ip: str


@dataclass(frozen=True)
class WebhookReply:
    """What the webhook answers the provider, and the jobs it enqueues before answering."""

    jobs: list[FetchJob]
    status_code: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    skipped: int = 0  # events acknowledged without a job (e.g. calls without a recording)
    rejected: list[str] = field(default_factory=list)  # events of a tolerated batch refused, and why


class DownloadStream(Protocol):
    """An open HTTP download: where its body lies in the file, its declared length and type,
    and its bytes in chunks.

    ``start`` is the file offset of the body's first byte: 0 for a whole file (HTTP 200), the
    first byte of the ``Content-Range`` for a 206. ``total_size`` is the size of the whole file
    when the reply says it (a 200's ``Content-Length``, a 206's ``Content-Range`` total).
    """

    start: int
    total_size: int | None
    content_length: int | None
    content_type: str | None

    def chunks(self, size: int) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class PendingDownload:
    """One file of a call, ready to be opened at the last moment (links are short-lived).

    ``open(offset)`` starts the download at byte ``offset``: 0 asks for the whole file, more asks
    for the rest of it with ``Range: bytes=offset-`` (a transfer that broke resumes so, in the
    same attempt). Whether the provider honoured the range is the stream's ``start`` (a provider
    may ignore ``Range`` and send the whole file with a 200); the caller checks it. Each call
    makes a fresh request, with a fresh single-use link where the provider needs one (a PBX
    ``random``).
    """

    file_name: str
    open: Callable[[int], AbstractContextManager[DownloadStream]]


@dataclass(frozen=True)
class ProviderRuntime:
    """What providers may use at fetch time: HTTP clients, a small state store (PBX tokens)
    and the public webhook base URL (a PBX is told at login where to push its reports)."""

    http: HttpClients
    state: ProviderState
    webhook_base_url: str


@dataclass(frozen=True)
class TimeWindow:
    """Calls that started from ``start`` to ``end``; one that ended after ``settled_before`` may
    still be pushed, so reconciliation leaves it to a later run (the next window overlaps)."""

    start: datetime
    end: datetime
    settled_before: datetime


@dataclass
class CallListing:
    """What a provider's own record says about the calls of a window.

    ``jobs``: one per recording (or selector) of every settled call that has one, exactly as
    the push path would have made it; ``calls``: calls listed; ``deferred``: calls too recent;
    ``problems``: records skipped and why; ``audit``: the raw listing, kept in the bucket.
    """

    jobs: list[FetchJob] = field(default_factory=list)
    calls: int = 0
    deferred: int = 0
    problems: list[str] = field(default_factory=list)
    audit: bytes | None = None


class Provider(Protocol):
    name: str
    reconcile_defaults: ReconcileSettings
    # Downloads of one source at once (callvault.fetch_slots) when the source does not say.
    default_max_concurrent_fetches: int
    # Fields of the provider's section that are its credentials: they stay out of the webhook's
    # copy of a source (the internet-facing function never calls the provider).
    credential_fields: frozenset[str]

    def parse_settings(self, raw: Mapping[str, Any], *, where: str, credentials: bool = True) -> Any:
        """Typed, validated provider section of a source; raises ConfigError naming ``where``.

        ``credentials=False``: the section comes without its ``credential_fields`` (the
        webhook's copy), and settings parsed so refuse to make a provider client.
        """
        ...

    def parse_webhook(self, source: Source, request: InboundRequest) -> WebhookReply:
        """Turn a call-ended event into jobs; pure (no provider calls: webhook deadlines are short)."""
        ...

    def resolve(self, source: Source, job: FetchJob, runtime: ProviderRuntime) -> list[PendingDownload]:
        """The files of the job's call, each opened only when it is about to be streamed."""
        ...


@runtime_checkable
class CallLister(Protocol):
    """The optional part of a provider that can list its calls (see ``CallListing``)."""

    def list_calls(self, source: Source, window: TimeWindow, runtime: ProviderRuntime) -> CallListing:
        """The calls of ``window``; provider trouble raises ``FetchError`` like a fetch does."""
        ...


@runtime_checkable
class SessionKeeper(Protocol):
    """The optional part of a provider whose pushes depend on a live API session (a PBX)."""

    def keep_session(self, source: Source, runtime: ProviderRuntime) -> str:
        """Keep the source's session alive (heartbeat, or log in again); says which it did."""
        ...


def call_lister(provider: Provider) -> CallLister | None:
    """The provider's call listing, if it has one (Dypls has no list API)."""
    return provider if isinstance(provider, CallLister) else None


def session_keeper(provider: Provider) -> SessionKeeper | None:
    """The provider's session keeping, if its pushes need a session."""
    return provider if isinstance(provider, SessionKeeper) else None
