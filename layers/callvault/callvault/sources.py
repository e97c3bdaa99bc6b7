"""Sources: the PBXs, call-centre instances and number pools whose recordings we archive.

A source is one JSON document (the same shape as one entry of the local sources YAML file),
stored in Secrets Manager twice, because it holds credentials:

- ``{SOURCES_SECRET_PREFIX}{source_id}``: the whole document, for the functions that call the
  provider (fetcher, session keeper, reconciler);
- ``{WEBHOOK_SECRET_PREFIX}{source_id}``: the same document without the provider's credentials
  (``webhook_document``), the only one the internet-facing webhook may read (IAM says so): it
  authenticates callers and parses their events, and never calls the provider.

Functions read them through ``SourceDirectory`` (cached per container); operators and the local
stack write both from a sources file (:mod:`callvault.sources_file`).
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callvault.errors import ConfigError, SourceNotFound
from callvault.participants import parse_policy
from callvault.providers.interface import ReconcileSettings, Source
from callvault.providers.registry import provider_named
from callvault.retention import DEFAULT_RETENTION_CLASS, RETENTION_CLASSES
from callvault.timefmt import parse_duration
from callvault.validation import boolean, reject_unknown, section, whole_number

# fullmatch, not match: "$" would also match before a trailing newline ("pbx-1\n" from %0A).
SOURCE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MIN_TOKEN_LENGTH = 16
DEFAULT_MAX_BODY_BYTES = 256 * 1024
MAX_UNKNOWN_CACHED = 1024
# More than the fetcher ever runs at once (its MaximumConcurrency is 10): "no limit of its own".
MAX_CONCURRENT_FETCHES = 100
# Common fields the webhook's copy leaves out: the key that keeps hashed numbers unguessable.
WEBHOOK_WITHHELD = frozenset({"participants_hash_key"})
COMMON_FIELDS = {
    "id",
    "provider",
    "webhook_token",
    "webhook_signing_secret",
    "allowed_ips",
    "max_body_bytes",
    "timezone",
    "retention_days",
    "retention_class",
    "max_concurrent_fetches",
    "participants",
    "participants_hash_key",
    "reconcile",
}
# The reconcile: section, each a duration (90s, 15m, 2h, 1d) with the bounds it must keep.
RECONCILE_DURATIONS = {
    "interval": (timedelta(seconds=1), timedelta(days=1)),
    "wait_for_push": (timedelta(0), timedelta(days=1)),
    "overlap": (timedelta(0), timedelta(days=7)),
    "first_lookback": (timedelta(seconds=1), timedelta(days=31)),
}


def parse_reconcile(raw: Any, defaults: ReconcileSettings, *, where: str) -> ReconcileSettings:
    """The ``reconcile:`` section of a source over its provider's defaults."""
    if raw is None:
        return defaults
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: reconcile must be a mapping")
    reject_unknown(raw, {"enabled", *RECONCILE_DURATIONS}, where, section="reconcile")
    enabled = boolean(raw, "enabled", defaults.enabled, where, section="reconcile")
    durations: dict[str, timedelta] = {}
    for name, (lowest, highest) in RECONCILE_DURATIONS.items():
        if name not in raw:
            continue
        try:
            value = parse_duration(raw[name])
        except ValueError as exc:
            raise ConfigError(f"{where}: reconcile.{name}: {exc}") from None
        if not lowest <= value <= highest:
            raise ConfigError(f"{where}: reconcile.{name} must be from {lowest} to {highest}, got {value}")
        durations[name] = value
    return replace(defaults, enabled=enabled, **durations)


def parse_source(raw: Any, *, where: str = "source", credentials: bool = True) -> Source:
    """Validate one source document; every problem names the field and the source.

    ``credentials=False`` reads the webhook's copy (``webhook_document``): the provider
    credentials must be absent, and the source's settings cannot call the provider.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping, got {type(raw).__name__}")
    source_id = raw.get("id")
    if not isinstance(source_id, str) or not SOURCE_ID.fullmatch(source_id):
        raise ConfigError(f"{where}: id must match {SOURCE_ID.pattern}, got {source_id!r}")
    where = f"source {source_id!r}"
    provider_name = raw.get("provider")
    if not isinstance(provider_name, str):
        raise ConfigError(f"{where}: provider is required")
    provider = provider_named(provider_name)
    if provider is None:
        raise ConfigError(f"{where}: unknown provider {provider_name!r}")
    reject_unknown(raw, COMMON_FIELDS | {provider.name}, where)

    token = raw.get("webhook_token")
    if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{where}: webhook_token must be a string of at least {MIN_TOKEN_LENGTH} characters")
    signing_secret = raw.get("webhook_signing_secret")
    if signing_secret is not None and (not isinstance(signing_secret, str) or len(signing_secret) < MIN_TOKEN_LENGTH):
        raise ConfigError(f"{where}: webhook_signing_secret must be at least {MIN_TOKEN_LENGTH} characters")

    networks = []
    allowed = raw.get("allowed_ips") or []
    if not isinstance(allowed, list):
        raise ConfigError(f"{where}: allowed_ips must be a list of addresses or CIDR ranges")
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(str(entry), strict=False))
        except ValueError:
            raise ConfigError(f"{where}: allowed_ips entry {entry!r} is not an address or CIDR range") from None

    max_body = whole_number(raw, "max_body_bytes", DEFAULT_MAX_BODY_BYTES, where, low=1024, high=6 * 1024 * 1024)

    try:
        zone = ZoneInfo(str(raw.get("timezone", "UTC")))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: timezone {raw.get('timezone')!r} is not an IANA time zone name") from None

    retention = (
        whole_number(raw, "retention_days", None, where, low=1) if raw.get("retention_days") is not None else None
    )
    provider_section = section(raw, provider.name, where)
    held = sorted(provider.credential_fields & set(provider_section))
    if held and not credentials:
        raise ConfigError(f"{where}: the webhook's copy of a source must not hold {', '.join(held)}")
    settings = provider.parse_settings(provider_section, where=f"{where}, {provider.name}", credentials=credentials)
    reconcile = parse_reconcile(raw.get("reconcile"), provider.reconcile_defaults, where=where)
    participants = parse_policy(
        raw.get("participants"), raw.get("participants_hash_key"), where=where, credentials=credentials
    )
    max_fetches = whole_number(
        raw,
        "max_concurrent_fetches",
        provider.default_max_concurrent_fetches,
        where,
        low=1,
        high=MAX_CONCURRENT_FETCHES,
    )
    retention_class = raw.get("retention_class", DEFAULT_RETENTION_CLASS)
    if retention_class not in RETENTION_CLASSES:
        raise ConfigError(
            f"{where}: retention_class must be one of {', '.join(RETENTION_CLASSES)}, got {retention_class!r}"
        )
    return Source(
        id=source_id,
        provider=provider,
        webhook_token=token,
        allowed_networks=tuple(networks),
        max_body_bytes=max_body,
        timezone=zone,
        retention_days=retention,
        webhook_signing_secret=signing_secret,
        settings=settings,
        reconcile=reconcile,
        participants=participants,
        retention_class=retention_class,
        max_concurrent_fetches=max_fetches,
    )


def webhook_document(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook's copy of a valid source document: all of it but the provider credentials."""
    provider = provider_named(str(raw["provider"]))
    if provider is None:
        raise ConfigError(f"source {raw.get('id')!r}: unknown provider {raw['provider']!r}")
    document = {name: value for name, value in raw.items() if name not in WEBHOOK_WITHHELD}
    document[provider.name] = {
        name: value for name, value in raw[provider.name].items() if name not in provider.credential_fields
    }
    return document


class SourceDirectory:
    """Looks sources up in Secrets Manager, with a short per-container cache.

    The cache keeps the webhook fast and cheap; its TTL bounds how long a rotated
    credential takes to reach warm containers. ``credentials=False``: the secrets under
    ``prefix`` are the webhook's copies (see the module docstring).
    """

    def __init__(
        self, secrets_client: Any, prefix: str, ttl_seconds: float = 60.0, *, credentials: bool = True
    ) -> None:
        self._client = secrets_client
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._credentials = credentials
        self._cache: dict[str, tuple[float, Source]] = {}
        # Unknown ids are remembered too, so junk requests do not each cost a Secrets Manager read;
        # bounded, because the ids come from unauthenticated callers.
        self._unknown: dict[str, float] = {}

    def get(self, source_id: str) -> Source:
        """The source with this id, or ``SourceNotFound``; a malformed secret is a ConfigError."""
        if not SOURCE_ID.fullmatch(source_id):
            raise SourceNotFound(f"unknown source {source_id!r}")
        cached = self._cache.get(source_id)
        now = time.monotonic()
        if cached and now - cached[0] < self._ttl:
            return cached[1]
        if now - self._unknown.get(source_id, -self._ttl) < self._ttl:
            raise SourceNotFound(f"unknown source {source_id!r}")
        try:
            reply = self._client.get_secret_value(SecretId=f"{self._prefix}{source_id}")
        except (
            self._client.exceptions.ResourceNotFoundException,
            # A deleted secret is "scheduled for deletion" for a while and answers this instead.
            self._client.exceptions.InvalidRequestException,
        ):
            if len(self._unknown) >= MAX_UNKNOWN_CACHED:
                self._unknown.clear()
            self._unknown[source_id] = now
            raise SourceNotFound(f"unknown source {source_id!r}") from None
        try:
            raw = json.loads(reply["SecretString"])
        except (KeyError, json.JSONDecodeError):
            raise ConfigError(f"secret of source {source_id!r} is not a JSON document") from None
        source = parse_source(raw, credentials=self._credentials)
        if source.id != source_id:
            raise ConfigError(f"secret {self._prefix}{source_id} holds source {source.id!r}")
        self._cache[source_id] = (now, source)
        return source

    def ids(self) -> Iterator[str]:
        """Every registered source id (ListSecrets filtered by the name prefix)."""
        paginator = self._client.get_paginator("list_secrets")
        for page in paginator.paginate(Filters=[{"Key": "name", "Values": [self._prefix]}]):
            for entry in page.get("SecretList", []):
                name = entry.get("Name", "")
                if name.startswith(self._prefix):
                    yield name[len(self._prefix) :]

    def all(self) -> tuple[list[Source], dict[str, str]]:
        """Every valid source, and the problems of the sources that could not be read (one
        malformed secret must not keep the others from being served)."""
        sources: list[Source] = []
        problems: dict[str, str] = {}
        for source_id in sorted(self.ids()):
            try:
                sources.append(self.get(source_id))
            except (ConfigError, SourceNotFound) as exc:
                problems[source_id] = str(exc)
        return sources, problems
