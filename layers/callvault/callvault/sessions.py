"""Keep alive the API sessions that providers push reports through (a PBX pushes only while its
token lives): one pass over every source whose provider keeps sessions."""

from __future__ import annotations

from callvault.errors import FetchError
from callvault.observability import logger
from callvault.providers.interface import ProviderRuntime, session_keeper
from callvault.sources import SourceDirectory


class SessionKeepingFailed(RuntimeError):
    """Raised after every source was tried, so the function's error alarm fires."""


def keep_sessions(sources: SourceDirectory, runtime: ProviderRuntime) -> dict[str, str]:
    """Heartbeat or log in every session; returns what was done per source id."""
    done: dict[str, str] = {}
    found, failures = sources.all()
    for source in found:
        keeper = session_keeper(source.provider)
        if keeper is None:
            continue
        try:
            done[source.id] = keeper.keep_session(source, runtime)
        except Exception as exc:
            # Whatever one source does, the others' sessions must not lapse (no session, no reports).
            failures[source.id] = exc.reason if isinstance(exc, FetchError) else f"{type(exc).__name__}: {exc}"
    for source_id, reason in failures.items():
        logger.error("session could not be kept alive", extra={"source_id": source_id, "reason": reason})
    logger.info("sessions kept", extra={"done": done, "failed": failures})
    if failures:
        raise SessionKeepingFailed("; ".join(f"{source_id}: {reason}" for source_id, reason in failures.items()))
    return done
