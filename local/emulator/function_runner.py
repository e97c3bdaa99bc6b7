"""Run the real Lambda handlers the way Lambda does: in execution environments of their own.

:class:`FunctionRunner` keeps ``environments`` execution environments per function (each a
process with its own imports and environment variables: :mod:`local.emulator.execution_environment`)
and gives an invocation a free one, as Lambda gives a concurrent invocation another environment;
one that is busy is not shared. An environment whose handler overran the Timeout, or that died,
is replaced by a fresh one (a new cold start), as Lambda does.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.emulator.execution_environment import EnvironmentFailed, ExecutionEnvironment, HandlerError

LOG = logging.getLogger("local.emulator.function_runner")

# Lambda's synchronous invocation limit: a bigger event would fail in AWS even if accepted here.
LAMBDA_MAX_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024


@dataclass(frozen=True)
class FunctionSpec:
    """One deployed function: configuration read from moto, code from the source tree."""

    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    timeout: int
    memory_mb: int
    layer_dirs: tuple[Path, ...]
    environment: Mapping[str, str]

    def runtime_variables(self) -> dict[str, str]:
        """The variables Lambda's runtime sets for every function (Powertools reads some)."""
        return {
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.name}",
            "LAMBDA_TASK_ROOT": str(self.code_dir),
            "_HANDLER": self.handler,
        }

    def boot(self) -> dict[str, Any]:
        """What an execution environment needs to know about its function."""
        return {
            "name": self.name,
            "arn": self.arn,
            "handler": self.handler,
            "code_dir": str(self.code_dir),
            "layer_dirs": [str(directory) for directory in self.layer_dirs],
            "timeout": self.timeout,
            "memory_mb": self.memory_mb,
        }


@dataclass(frozen=True)
class Invocation:
    """A finished invocation, kept for tests and the demo log."""

    function_id: str
    request_id: str
    duration: float
    error: str | None = None


class FunctionRunner:
    """Holds each function's execution environments and invokes handlers in them."""

    def __init__(
        self,
        specs: Iterable[FunctionSpec],
        environments_per_function: int,
        environ: Mapping[str, Mapping[str, str]],
    ) -> None:
        """``environ`` gives each function (by logical id) the variables its environments see."""
        self.specs = {spec.logical_id: spec for spec in specs}
        self.environments = max(1, environments_per_function)
        self._environ = {function_id: dict(variables) for function_id, variables in environ.items()}
        self._pools: dict[str, queue.Queue[ExecutionEnvironment]] = {}
        self._all: list[ExecutionEnvironment] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self.invocations: collections.deque[Invocation] = collections.deque(maxlen=10_000)

    def environment_of(self, function_id: str) -> dict[str, str]:
        """The environment variables a function's handler sees."""
        return dict(self._environ[function_id])

    def start(self) -> None:
        """Start every execution environment (all cold starts at once) and wait until each is ready;
        a handler that does not import stops them all and raises EnvironmentFailed."""
        for spec in self.specs.values():
            self._pools[spec.logical_id] = queue.Queue()
            for _ in range(self.environments):
                environment = self._new_environment(spec)
                self._all.append(environment)
        try:
            for environment in self._all:
                environment.wait_ready()
        except EnvironmentFailed:
            self.stop()
            raise
        for environment in self._all:
            self._pools[self._function_id(environment)].put(environment)

    def stop(self) -> None:
        """End every execution environment."""
        with self._lock:
            environments, self._all = self._all, []
        for environment in environments:
            environment.stop()
        self._pools.clear()

    @property
    def in_flight(self) -> int:
        """Invocations currently running or waiting for an environment."""
        with self._lock:
            return self._in_flight

    @property
    def errors(self) -> list[Invocation]:
        """Invocations that raised."""
        return [record for record in list(self.invocations) if record.error]

    def invoke(self, function_id: str, event: Any) -> Any:
        """Run one invocation in a free environment; its JSON result, or its error raised
        (HandlerError as the Python runtime reports it; EnvironmentFailed if it died)."""
        pool = self._pools.get(function_id)
        if pool is None:
            raise KeyError(f"no started function {function_id!r}; have {sorted(self._pools)}")
        with self._lock:
            self._in_flight += 1
        try:
            environment = pool.get()
            try:
                if not environment.alive:  # stopped on a timeout, or crashed: a fresh cold start
                    environment = self._replace(environment)
                return self._run(function_id, environment, event)
            finally:
                pool.put(environment)  # a dead one too: the next invocation starts it afresh
        finally:
            with self._lock:
                self._in_flight -= 1

    def _run(self, function_id: str, environment: ExecutionEnvironment, event: Any) -> Any:
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        error: str | None = None
        try:
            return environment.invoke(event, request_id)
        except (HandlerError, EnvironmentFailed) as exc:
            error = str(exc)
            trace = "".join(exc.stack_trace) if isinstance(exc, HandlerError) else ""
            LOG.error("%s invocation %s failed: %s\n%s", function_id, request_id, exc, trace)
            raise
        finally:
            duration = time.monotonic() - started
            self.invocations.append(Invocation(function_id, request_id, duration, error))

    def _new_environment(self, spec: FunctionSpec) -> ExecutionEnvironment:
        environment = ExecutionEnvironment(spec.boot(), self._environ[spec.logical_id])
        environment.start()
        return environment

    def _function_id(self, environment: ExecutionEnvironment) -> str:
        return next(s.logical_id for s in self.specs.values() if s.name == environment.function["name"])

    def _replace(self, dead: ExecutionEnvironment) -> ExecutionEnvironment:
        fresh = self._new_environment(self.specs[self._function_id(dead)])
        with self._lock:
            self._all = [fresh if environment is dead else environment for environment in self._all]
        fresh.wait_ready()
        return fresh
