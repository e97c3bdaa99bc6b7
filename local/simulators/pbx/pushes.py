"""How the PBX pushes its NewCdr reports: one worker, in order, with retries, like its event queue."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from local.simulators.push import post

__all__ = ["PushRecord", "PushSettings", "ReportPusher"]


@dataclass(frozen=True)
class PushRecord:
    """One HTTP attempt to push a report.  ``status`` is None when the connection failed."""

    url: str
    callid: str
    attempt: int
    status: int | None
    error: str | None
    body: dict[str, str]


class PushSettings(Protocol):
    """How hard the PBX tries (read at every attempt, so a test may change them)."""

    push_attempts: int
    push_backoff_s: float
    push_timeout_s: float


class ReportPusher:
    """Delivers queued reports in the background; a report that never gets HTTP 200 is dropped.

    Counts ``push_attempts``, ``pushes_ok`` and ``pushes_failed`` through ``count``.
    """

    def __init__(self, settings: PushSettings, count: Callable[[str], None]) -> None:
        self._settings = settings
        self._count = count
        self._queue: deque[tuple[str, str, dict[str, str]]] = deque()
        self._cv = threading.Condition()
        self._pending = 0
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._pushes: list[PushRecord] = []

    @property
    def pushes(self) -> list[PushRecord]:
        """Every attempt so far, in order."""
        with self._cv:
            return list(self._pushes)

    def enqueue(self, urls: Iterable[str], callid: str, report: dict[str, str]) -> None:
        """Queue ``report`` for each of ``urls``, behind the reports already queued."""
        with self._cv:
            for url in urls:
                self._queue.append((url, callid, dict(report)))
                self._pending += 1
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="pbx-push", daemon=True)
                self._worker.start()
            self._cv.notify_all()

    def wait(self, timeout: float) -> bool:
        """Wait until every queued push (retries included) is done; True if all were."""
        with self._cv:
            return self._cv.wait_for(lambda: self._pending == 0, timeout)

    def resume(self) -> None:
        """Accept work again after :meth:`stop`."""
        self._stopping.clear()

    def stop(self) -> None:
        """Abandon queued reports and pending retries, and let the worker end."""
        self._stopping.set()
        with self._cv:
            self._queue.clear()
            self._pending = 0
            self._cv.notify_all()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.join(timeout=2 * self._settings.push_timeout_s)

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._queue) or self._stopping.is_set(), 1.0)
                if self._stopping.is_set():
                    return
                if not self._queue:
                    continue
                url, callid, body = self._queue.popleft()
            try:
                self._deliver(url, callid, body)
            finally:
                with self._cv:
                    self._pending = max(0, self._pending - 1)
                    self._cv.notify_all()

    def _deliver(self, url: str, callid: str, body: dict[str, str]) -> None:
        data = json.dumps(body).encode("utf-8")
        headers = {"User-Agent": "WebAPI", "Content-Type": "application/json"}
        attempts = self._settings.push_attempts
        for attempt in range(1, attempts + 1):
            if self._stopping.is_set():
                return
            sent = post(url, data, headers, self._settings.push_timeout_s)
            with self._cv:  # recorded and counted together, so a test never sees one without the other
                self._pushes.append(PushRecord(url, callid, attempt, sent.status, sent.error, body))
                self._count("push_attempts")
                if sent.status == 200:
                    self._count("pushes_ok")
                    return
            if attempt < attempts:
                self._stopping.wait(self._settings.push_backoff_s * (2 ** (attempt - 1)))
        self._count("pushes_failed")
