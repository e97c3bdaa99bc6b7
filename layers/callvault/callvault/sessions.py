"""Keep alive the API sessions that providers push reports through (a PBX pushes only while its
token lives): one pass over every source whose provider keeps sessions.

Every source is kept on a worker thread of its own, all at once, and the pass waits for them
only until a deadline taken from the function's remaining time: one PBX that accepts the
connection and never answers can neither hold up the other sources' sessions nor run the
function into its timeout (which would report nothing about anyone). The workers share the
runtime: each source has its own HTTP session, and the state table's item calls go through
boto3's thread-safe client.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from callvault.errors import FetchError
from callvault.observability import logger
from callvault.providers.interface import ProviderRuntime, SessionKeeper, Source, session_keeper
from callvault.sources import SourceDirectory

# What the pass keeps back from the function's remaining time to report and return.
DEADLINE_MARGIN_SECONDS = 5.0


class SessionKeepingFailed(RuntimeError):
    """Raised after every source was tried, so the function's error alarm fires."""


@dataclass(frozen=True)
class _Outcome:
    source_id: str
    done: str | None = None
    failure: str | None = None


def keep_sessions(
    sources: SourceDirectory, runtime: ProviderRuntime, *, time_left: Callable[[], float]
) -> dict[str, str]:
    """Heartbeat or log in every session at once; returns what was done per source id.

    ``time_left()`` says how many seconds the pass may still wait (the function's remaining
    time less ``DEADLINE_MARGIN_SECONDS``); a source without an outcome by then has failed.
    """
    found, failures = sources.all()
    outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
    pending: set[str] = set()
    for source in found:
        keeper = session_keeper(source.provider)
        if keeper is None:
            continue
        pending.add(source.id)
        # A daemon thread: one still waiting on a PBX past the deadline is left behind (its HTTP
        # timeouts end it) and must not keep the process alive; its late outcome is dropped.
        worker = threading.Thread(
            target=_keep_one, args=(keeper, source, runtime, outcomes), name=f"session-{source.id}", daemon=True
        )
        worker.start()
    done: dict[str, str] = {}
    while pending:
        try:
            outcome = outcomes.get(timeout=max(0.0, time_left()))
        except queue.Empty:
            break
        pending.discard(outcome.source_id)
        if outcome.failure is None:
            done[outcome.source_id] = outcome.done or ""
        else:
            failures[outcome.source_id] = outcome.failure
    for source_id in sorted(pending):
        failures[source_id] = "no answer before the session keeper's deadline (the PBX accepts but does not reply)"
    for source_id, reason in failures.items():
        logger.error("session could not be kept alive", extra={"source_id": source_id, "reason": reason})
    logger.info("sessions kept", extra={"done": done, "failed": failures})
    if failures:
        raise SessionKeepingFailed("; ".join(f"{source_id}: {reason}" for source_id, reason in failures.items()))
    return done


def _keep_one(
    keeper: SessionKeeper, source: Source, runtime: ProviderRuntime, outcomes: queue.SimpleQueue[_Outcome]
) -> None:
    try:
        outcomes.put(_Outcome(source.id, done=keeper.keep_session(source, runtime)))
    except Exception as exc:
        # Whatever one source does, the others' sessions must not lapse (no session, no reports).
        reason = exc.reason if isinstance(exc, FetchError) else f"{type(exc).__name__}: {exc}"
        outcomes.put(_Outcome(source.id, failure=reason))
