"""The local stand-in for Amazon SQS fair queues: among the messages at hand, the one whose
message group (a callvault job's source) has the fewest messages in flight goes first.

Shared by the pollers of one event source mapping: each poller takes its batch from here, and
whoever finds too few messages at hand receives more from the queue. Messages held here are in
flight as far as SQS knows (received, not deleted), as in the Lambda poller's own buffer.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

GROUP = "MessageGroupId"


def group_of(message: dict[str, Any]) -> str:
    return str((message.get("Attributes") or {}).get(GROUP, ""))


class FairBuffer:
    def __init__(self, receive: Callable[[int, int], list[dict[str, Any]]], hold: int = 10) -> None:
        """``receive(count, wait_seconds)`` asks the queue for messages; at most ``hold`` are kept here."""
        self._receive = receive
        self._hold = hold
        self._lock = threading.Lock()
        self._receiving = threading.Lock()
        self._at_hand: list[dict[str, Any]] = []
        self._in_flight: Counter[str] = Counter()

    def take(self, count: int, wait_seconds: int) -> list[dict[str, Any]]:
        """Up to ``count`` messages, those of the least busy groups first (then the oldest).

        Tops the messages at hand up to ``hold`` first, so a quiet group's message that just
        arrived competes with a busy group's backlog; only a poller with nothing at hand waits
        (long-polls, or waits for the poller that is receiving)."""
        with self._lock:
            enough = len(self._at_hand) >= count
        if self._receiving.acquire(timeout=0 if enough else wait_seconds + 1):
            try:
                with self._lock:
                    wanted = self._hold - len(self._at_hand)
                    wait = 0 if len(self._at_hand) >= count else wait_seconds
                received = self._receive(wanted, wait) if wanted > 0 else []
                with self._lock:
                    self._at_hand += received
            finally:
                self._receiving.release()
        with self._lock:
            chosen: list[dict[str, Any]] = []
            for _ in range(min(count, len(self._at_hand))):
                best = min(range(len(self._at_hand)), key=lambda i: (self._in_flight[group_of(self._at_hand[i])], i))
                message = self._at_hand.pop(best)
                self._in_flight[group_of(message)] += 1
                chosen.append(message)
            return chosen

    def done(self, messages: list[dict[str, Any]]) -> None:
        with self._lock:
            for message in messages:
                group = group_of(message)
                self._in_flight[group] -= 1
                if self._in_flight[group] <= 0:
                    del self._in_flight[group]

    def drain(self) -> list[dict[str, Any]]:
        """The messages still at hand (to give back to the queue on stop)."""
        with self._lock:
            held, self._at_hand = self._at_hand, []
            return held
