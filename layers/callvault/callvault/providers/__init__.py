"""The provider interface: one module per provider, each behind the same small protocol.

A provider knows three things: how its source settings look, how its call-ended events
read (turning a webhook body into ``FetchJob``s and the reply the provider expects), and
how to turn a job into downloads at fetch time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from callvault.errors import BadRequest

if TYPE_CHECKING:
    from callvault.http import HttpClients
    from callvault.models import FetchJob
    from callvault.provider_state import ProviderState
    from callvault.sources import Source


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


class Provider(Protocol):
    name: str

    def parse_settings(self, raw: Mapping[str, Any], *, where: str) -> Any:
        """Typed, validated provider section of a source; raises ConfigError naming ``where``."""
        ...

    def parse_webhook(self, source: Source, request: InboundRequest) -> WebhookReply:
        """Turn a call-ended event into jobs; pure (no provider calls: webhook deadlines are short)."""
        ...

    def resolve(self, source: Source, job: FetchJob, runtime: ProviderRuntime) -> list[PendingDownload]:
        """The files of the job's call, each opened only when it is about to be streamed."""
        ...


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
    "DownloadStream",
    "InboundRequest",
    "PendingDownload",
    "Provider",
    "ProviderRuntime",
    "WebhookReply",
    "json_events",
    "provider_named",
]
