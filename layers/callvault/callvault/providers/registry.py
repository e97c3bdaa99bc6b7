"""Which providers exist: the one list the core, the local stack and the demo read.

A provider's module is imported when a source of it is first read, not before: a function
serves the providers of its sources, and each module it does not need is cold-start time
(the CCC module alone, with its Alibaba RPC client, is about 10 ms).
"""

from __future__ import annotations

import importlib

from callvault.providers.interface import Provider

# Provider name → the module whose ``PROVIDER`` it is.
_MODULES = {
    "pbx": "callvault.providers.pbx",
    "ccc": "callvault.providers.ccc",
    "dypls": "callvault.providers.dypls",
}
PROVIDER_NAMES = tuple(_MODULES)


def provider_named(name: str) -> Provider | None:
    """The provider registered under ``name``."""
    module = _MODULES.get(name)
    if module is None:
        return None
    provider: Provider = importlib.import_module(module).PROVIDER
    return provider
