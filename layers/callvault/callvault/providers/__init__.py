"""The provider interface: one module per provider, each behind the same small protocol.

A provider knows three things: how its source settings look, how its call-ended events
read (turning a webhook body into ``FetchJob``s and the reply the provider expects), and
how to turn a job into downloads at fetch time. A provider with a record of its calls (PBX
CDRs, CCC call detail records) also lists the calls of a time window (``CallLister``), so
reconciliation can archive what a lost push never announced.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from callvault.errors import BadRequest

if TYPE_CHECKING:
    from callvault.http import HttpClients
    from callvault.models import FetchJob
    from callvault.provider_state import ProviderState
    from callvault.sources import ReconcileSettings, Source


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


class DownloadStream(Protocol):
    """An open HTTP download: its declared length and type, and its bytes in chunks."""

    content_length: int | None
    content_type: str | None

    def chunks(self, size: int) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class PendingDownload:
    """One file of a call, ready to be opened at the last moment (links are short-lived)."""

    file_name: str
    open: Callable[[], AbstractContextManager[DownloadStream]]


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

    def parse_settings(self, raw: Mapping[str, Any], *, where: str) -> Any:
        """Typed, validated provider section of a source; raises ConfigError naming ``where``."""
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


def call_lister(provider: Provider) -> CallLister | None:
    """The provider's call listing, if it has one (Dypls has no list API)."""
    return provider if isinstance(provider, CallLister) else None


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


def provider_named(name: str) -> Provider | None:
    """The provider implementation registered under ``name``."""
    from callvault.providers import ccc, dypls, pbx

    registry: dict[str, Provider] = {module.PROVIDER.name: module.PROVIDER for module in (pbx, ccc, dypls)}
    return registry.get(name)


__all__ = [
    "CallLister",
    "CallListing",
    "DownloadStream",
    "InboundRequest",
    "PendingDownload",
    "Provider",
    "ProviderRuntime",
    "TimeWindow",
    "WebhookReply",
    "call_lister",
    "json_events",
    "provider_named",
]
