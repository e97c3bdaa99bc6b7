"""Run the real Lambda handler modules in-process, as Lambda's Python runtime would.

:class:`FunctionRunner` imports each handler from its source directory once per execution
environment and invokes it with a :class:`LambdaContext`. All functions share this process's
environment variables, hence :func:`merge_environments`.
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

LOG = logging.getLogger("local.emulator.function_runner")

Handler = Callable[[Any, Any], Any]

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


def merge_environments(
    environments: Mapping[str, Mapping[str, str]], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Union of all functions' variables (they share one process environment) plus overrides.

    Raises ValueError when two functions give one variable different values, since in-process
    they cannot both be right; an override settles such a conflict on purpose.
    """
    overrides = overrides or {}
    merged: dict[str, str] = {}
    owners: dict[str, str] = {}
    conflicts: list[str] = []
    for function_id, variables in environments.items():
        for key, value in variables.items():
            if key in overrides:
                continue
            if key in merged and merged[key] != value:
                conflicts.append(f"{key} ({owners[key]}={merged[key]!r}, {function_id}={value!r})")
                continue
            merged.setdefault(key, value)
            owners.setdefault(key, function_id)
    if conflicts:
        raise ValueError("functions disagree on environment variables: " + "; ".join(conflicts))
    merged.update(overrides)
    return merged


class LambdaContext:
    """The attributes of the Python runtime's context object that handlers and Powertools read."""

    def __init__(self, spec: FunctionSpec, request_id: str) -> None:
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        # The Python runtime hands this over as a string (it comes from an env variable).
        self.memory_limit_in_mb = str(spec.memory_mb)
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline = time.monotonic() + spec.timeout

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's configured Timeout."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class Invocation:
    """A finished invocation, kept for tests and the demo log."""

    function_id: str
    request_id: str
    duration: float
    error: str | None = None


def load_handler(spec: FunctionSpec, instance: int = 0) -> tuple[ModuleType, Handler]:
    """Import ``spec.handler`` (``module.function``) from the function's source directory.

    Every load is a fresh module under a unique name: several functions have an ``app.py``,
    and each execution environment (``instance``) needs its own module globals. The code
    directory is on sys.path only during the import, so sibling modules resolve as in Lambda.
    """
    module_path, _, attribute = spec.handler.rpartition(".")
    relative = Path(*module_path.split("."))
    file = spec.code_dir / relative.with_suffix(".py")
    if not file.is_file():
        file = spec.code_dir / relative / "__init__.py"
    if not module_path or not file.is_file():
        raise ImportError(f"{spec.logical_id}: handler {spec.handler!r} not found under {spec.code_dir}")
    name = f"_local_function_{spec.logical_id}_{instance}_{module_path.replace('.', '_')}"
    module_spec = importlib.util.spec_from_file_location(name, file)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    sys.path.insert(0, str(spec.code_dir))
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(str(spec.code_dir))
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise ImportError(f"{spec.logical_id}: {file} has no callable {attribute!r}")
    return module, handler


def clear_module_caches(directories: Iterable[Path]) -> list[str]:
    """Empty the ``functools`` caches of every module loaded from under ``directories``.

    Layer modules stay imported for the whole process (tests hold references to their
    classes), but a cache such as "settings read from the environment once" must not carry
    another stack's (or a unit test's) configuration into this one. Returns what it cleared.
    """
    roots = [directory.resolve() for directory in directories]
    cleared = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file or not any(Path(file).resolve().is_relative_to(root) for root in roots):
            continue
        for attribute, value in list(vars(module).items()):
            if callable(getattr(value, "cache_clear", None)) and getattr(value, "__module__", None) == name:
                value.cache_clear()
                cleared.append(f"{name}.{attribute}")
    return cleared


class FunctionRunner:
    """Holds each function's execution environments and invokes handlers in them.

    Like Lambda, an environment (a separately imported handler module, with its own globals
    such as a Powertools resolver or BatchProcessor) runs one invocation at a time; a function
    has ``environments`` of them, and a further concurrent invocation waits for a free one.
    Layer modules (``callvault``) are shared by all environments of the process.
    """

    def __init__(self, specs: Iterable[FunctionSpec], region: str, environments: int = 1) -> None:
        self.specs = {spec.logical_id: spec for spec in specs}
        self.region = region
        self.environments = max(1, environments)
        self._pools: dict[str, queue.Queue[Handler]] = {}
        self._modules: list[str] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self.invocations: collections.deque[Invocation] = collections.deque(maxlen=10_000)

    def import_dirs(self) -> list[Path]:
        """Layer directories of all functions, in first-seen order (go on sys.path)."""
        seen: dict[Path, None] = {}
        for spec in self.specs.values():
            for directory in spec.layer_dirs:
                seen.setdefault(directory, None)
        return list(seen)

    def load_handlers(self) -> None:
        """Import every handler module once per environment (after env and sys.path are set).

        Layer modules imported earlier in this process (by tests, or a previous stack) keep
        their identity, but their ``functools`` caches are emptied first, since a cold Lambda
        environment would not have them either.
        """
        clear_module_caches(self.import_dirs())
        for spec in self.specs.values():
            pool: queue.Queue[Handler] = queue.Queue()
            for instance in range(self.environments):
                module, handler = load_handler(spec, instance)
                self._modules.append(module.__name__)
                pool.put(handler)
            self._pools[spec.logical_id] = pool

    def unload_handlers(self) -> None:
        """Forget the handler modules (and layer caches) so a later stack starts afresh."""
        for name in self._modules:
            sys.modules.pop(name, None)
        clear_module_caches(self.import_dirs())
        self._modules.clear()
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
        """Run one handler with ``event`` in a free environment; log and re-raise its exception."""
        pool = self._pools.get(function_id)
        if pool is None:
            raise KeyError(f"no loaded function {function_id!r}; have {sorted(self._pools)}")
        with self._lock:
            self._in_flight += 1
        try:
            handler = pool.get()
            try:
                return self._run(function_id, handler, event)
            finally:
                pool.put(handler)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _run(self, function_id: str, handler: Handler, event: Any) -> Any:
        """Invoke with a fresh context; record the outcome and flag Timeout overruns."""
        spec = self.specs[function_id]
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        error: str | None = None
        try:
            return handler(event, LambdaContext(spec, request_id))
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            LOG.exception("%s invocation %s failed", function_id, request_id)
            raise
        finally:
            duration = time.monotonic() - started
            if duration > spec.timeout:
                LOG.warning(
                    "%s took %.1fs, beyond its %ss Timeout: Lambda would have stopped it",
                    function_id,
                    duration,
                    spec.timeout,
                )
            self.invocations.append(Invocation(function_id, request_id, duration, error))
