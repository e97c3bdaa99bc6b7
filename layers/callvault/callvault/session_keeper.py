"""Keep every PBX source's API session alive (login, or heartbeat, or re-login)."""

from __future__ import annotations

from callvault.errors import FetchError
from callvault.observability import logger
from callvault.providers import ProviderRuntime
from callvault.providers.pbx import PbxClient, PbxSession, PbxSettings
from callvault.sources import SourceDirectory


class SessionKeeperFailed(RuntimeError):
    """Raised after every source was tried, so the function's error alarm fires."""


def keep_pbx_sessions(sources: SourceDirectory, runtime: ProviderRuntime) -> dict[str, str]:
    """One pass over all PBX sources; returns what was done per source id."""
    done: dict[str, str] = {}
    pbx_sources, failures = sources.of_provider("pbx")
    for source in pbx_sources:
        settings: PbxSettings = source.settings
        client = PbxClient(settings, runtime.http.session(source.id, settings.tls))
        try:
            done[source.id] = PbxSession(source, client, runtime).keep_alive()
        except Exception as exc:
            # Whatever one PBX does, the others' tokens must not lapse (no token, no reports).
            failures[source.id] = exc.reason if isinstance(exc, FetchError) else f"{type(exc).__name__}: {exc}"
    for source_id, reason in failures.items():
        logger.error("PBX session could not be kept alive", extra={"source_id": source_id, "reason": reason})
    logger.info("PBX sessions kept", extra={"done": done, "failed": failures})
    if failures:
        raise SessionKeeperFailed("; ".join(f"{source_id}: {reason}" for source_id, reason in failures.items()))
    return done
