"""The local stand-in for Amazon SQS fair queues: among the messages at hand, the one whose
message group (a callvault job's source) has the fewest messages in flight goes first.

Shared by the pollers of one event source mapping: each poller takes its batch from here, and a
poller that finds too few messages at hand receives more from the queue. To have a choice, it
receives a few more than it needs (``hold``: the mapping's pollers times its batch size), only
from a queue whose visibility timeout leaves room for that: a message held here is in flight as
far as SQS knows (received, not deleted), and one held past half its visibility timeout is let go
rather than processed (SQS may hand it out again by then).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger("local.emulator.fair_dispatch")
GROUP = "MessageGroupId"
# Below this visibility timeout nothing is received ahead of need.
PREFETCH_MIN_VISIBILITY_SECONDS = 60


def group_of(message: dict[str, Any]) -> str:
    return str((message.get("Attributes") or {}).get(GROUP, ""))


def hold_for(pollers: int, batch_size: int, visibility_timeout: float) -> int | None:
    """How many messages the buffer of a mapping keeps at hand; None: no more than a poller takes."""
    if visibility_timeout < PREFETCH_MIN_VISIBILITY_SECONDS:
        return None
    return max(batch_size, min(10, pollers * batch_size))


class FairBuffer:
    def __init__(
        self,
        receive: Callable[[int, int], list[dict[str, Any]]],
        hold: int | None = None,
        max_age_seconds: float = float("inf"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``receive(count, wait_seconds)`` asks the queue for messages; at most ``hold`` are
        kept here, each for at most ``max_age_seconds``; ``hold`` None: a poller receives only
        what it takes (no choice beyond what one receive returns, nothing held)."""
        self._receive = receive
        self._hold = hold
        self._max_age = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._receiving = threading.Lock()
        self._at_hand: list[tuple[float, dict[str, Any]]] = []
        self._in_flight: Counter[str] = Counter()

    def take(self, count: int, wait_seconds: int) -> list[dict[str, Any]]:
        """Up to ``count`` messages, those of the least busy groups first (then the oldest).

        Tops the messages at hand up first, so a quiet group's message that just arrived
        competes with a busy group's backlog; only a poller with too few at hand waits
        (long-polls, or waits for the poller that is receiving)."""
        with self._lock:
            enough = len(self._at_hand) >= count
        # Wait for the poller that is receiving only when this one would long-poll itself: a poller
        # filling its batch (wait 0) holds messages whose visibility timeout is running.
        if self._receiving.acquire(timeout=0 if enough or wait_seconds == 0 else wait_seconds + 1):
            try:
                with self._lock:
                    wanted = max(count, self._hold or count) - len(self._at_hand)
                    wait = 0 if len(self._at_hand) >= count else wait_seconds
                received = self._receive(wanted, wait) if wanted > 0 else []
                with self._lock:
                    now = self._clock()
                    self._at_hand += [(now, message) for message in received]
            finally:
                self._receiving.release()
        with self._lock:
            now = self._clock()
            stale = [m for at, m in self._at_hand if now - at > self._max_age]
            if stale:
                LOG.warning("%d message(s) held past half their visibility timeout: let go", len(stale))
                self._at_hand = [(at, m) for at, m in self._at_hand if now - at <= self._max_age]
            chosen: list[dict[str, Any]] = []
            for _ in range(min(count, len(self._at_hand))):
                best = min(range(len(self._at_hand)), key=lambda i: (self._in_flight[group_of(self._at_hand[i][1])], i))
                _, message = self._at_hand.pop(best)
                self._in_flight[group_of(message)] += 1
                chosen.append(message)
            return chosen

    def done(self, messages: list[dict[str, Any]]) -> None:
        """The messages taken are processed (or given up on): their groups have fewer in flight."""
        with self._lock:
            for message in messages:
                group = group_of(message)
                self._in_flight[group] -= 1
                if self._in_flight[group] <= 0:
                    del self._in_flight[group]

    def drain(self) -> list[dict[str, Any]]:
        """The messages still at hand (to give back to the queue on stop)."""
        with self._lock:
            held, self._at_hand = [m for _, m in self._at_hand], []
            return held
