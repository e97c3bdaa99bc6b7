"""Which providers exist: the one list the core, the local stack and the demo read."""

from __future__ import annotations

from callvault.providers import ccc, dypls, pbx
from callvault.providers.interface import Provider

PROVIDERS: dict[str, Provider] = {provider.name: provider for provider in (pbx.PROVIDER, ccc.PROVIDER, dypls.PROVIDER)}


def provider_named(name: str) -> Provider | None:
    """The provider registered under ``name``."""
    return PROVIDERS.get(name)
