"""Play EventBridge schedules (``Schedule``/``ScheduleV2`` events): timers that invoke functions."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from local.emulator.function_runner import FunctionRunner
from local.emulator.moto_server import DEFAULT_ACCOUNT

LOG = logging.getLogger("local.emulator.scheduler")


@dataclass(frozen=True)
class ScheduleSpec:
    """A Schedule/ScheduleV2 event of a function."""

    function_id: str
    event_id: str
    kind: str
    expression: str
    interval_seconds: float | None
    input: str | None = None
    resource_arn: str = ""


_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


def parse_rate_seconds(expression: str) -> float | None:
    """Seconds between runs of a ``rate(...)`` expression; None for cron/at expressions."""
    match = _RATE.match(expression.strip())
    if not match:
        return None
    return float(int(match.group(1)) * _RATE_UNITS[match.group(2).rstrip("s")])


def scheduled_event(spec: ScheduleSpec, region: str, account: str) -> Any:
    """The payload a schedule delivers: its ``Input`` if set, else a "Scheduled Event"."""
    if spec.input is not None:
        return json.loads(spec.input)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler" if spec.kind == "ScheduleV2" else "aws.events",
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [spec.resource_arn] if spec.resource_arn else [],
        "detail": {},
    }


class Scheduler:
    """Fires every schedule once at start, then every interval, in one thread."""

    def __init__(
        self,
        specs: Iterable[ScheduleSpec],
        runner: FunctionRunner,
        region: str,
        interval_override: float | None = None,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        self.specs = list(specs)
        self._runner = runner
        self._region = region
        self._account = account
        self._override = interval_override
        self._stop = threading.Event()
        self._startup_done = threading.Event()
        self._thread: threading.Thread | None = None

    def interval(self, spec: ScheduleSpec) -> float | None:
        """Seconds between runs: the override, else the template's rate (None: start only)."""
        return self._override if self._override is not None else spec.interval_seconds

    @property
    def startup_pending(self) -> bool:
        """True while the start-up round has not finished."""
        return self._thread is not None and not self._startup_done.is_set()

    def start(self) -> None:
        """Start the timer thread; cron/at schedules without an override run only at start."""
        for spec in self.specs:
            if self.interval(spec) is None:
                LOG.info("%s (%s) runs at start and on demand only", spec.event_id, spec.expression)
        self._thread = threading.Thread(target=self._run, name="schedules", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer thread (an invocation in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def fire(self, spec: ScheduleSpec) -> Any:
        """Invoke one schedule's function now; return its result."""
        return self._runner.invoke(spec.function_id, scheduled_event(spec, self._region, self._account))

    def run_all_now(self, function_id: str | None = None) -> dict[str, Any]:
        """Fire every schedule (of ``function_id`` only, if given) once in the caller's thread;
        return each result by event id.

        Like EventBridge, one failing target does not stop the others: a handler's exception
        is logged, recorded in the runner's invocations and returned as that schedule's value.
        """
        results: dict[str, Any] = {}
        for spec in self.specs:
            if function_id is not None and spec.function_id != function_id:
                continue
            try:
                results[spec.event_id] = self.fire(spec)
            except Exception as error:
                results[spec.event_id] = error
        return results

    def _fire_logged(self, spec: ScheduleSpec) -> None:
        # The runner has logged the traceback; EventBridge would simply fire again next time.
        with contextlib.suppress(Exception):
            self.fire(spec)

    def _run(self) -> None:
        due: dict[str, float] = {}
        for spec in self.specs:
            if self._stop.is_set():
                break
            self._fire_logged(spec)
            interval = self.interval(spec)
            if interval is not None:
                due[spec.event_id] = time.monotonic() + interval
        self._startup_done.set()
        by_id = {spec.event_id: spec for spec in self.specs}
        while due and not self._stop.is_set():
            event_id = min(due, key=due.__getitem__)
            if self._stop.wait(max(0.0, due[event_id] - time.monotonic())):
                break
            self._fire_logged(by_id[event_id])
            interval = self.interval(by_id[event_id])
            due[event_id] = max(due[event_id] + (interval or 0.0), time.monotonic())
