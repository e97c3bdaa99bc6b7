"""One Lambda execution environment: a Python process of its own, as Lambda runs a function.

Like Lambda, an environment imports the handler once (its cold start), keeps its module
globals between invocations, sees only its function's environment variables, and runs one
invocation at a time; a handler that overruns the function's Timeout is stopped and the
environment replaced. The parent (:class:`ExecutionEnvironment`) talks to the child
(:func:`serve`, ``python -m local.emulator.execution_environment``) over two pipes of their own,
one length-prefixed JSON message at a time, so the handler's stdout and stderr remain the
function's log. Events and results cross as JSON, as they do through Lambda's runtime API.
"""

from __future__ import annotations

import decimal
import importlib.util
import json
import os
import select
import struct
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The project root: the child runs this module by name from there.
_ROOT = Path(__file__).resolve().parents[2]
_LENGTH = struct.Struct(">I")
# How long a cold start (imports of the handler and its layer) may take before it counts as failed.
START_TIMEOUT_S = 120.0
# The child answers a stop at once; after this it is killed.
STOP_TIMEOUT_S = 5.0
# Variables of the parent a Python process needs to run at all; nothing else leaks in.
_PROCESS_VARIABLES = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "SYSTEMROOT")


class HandlerError(Exception):
    """An invocation that failed in the function: the error object the Python runtime reports."""

    def __init__(self, error_type: str, message: str, stack_trace: list[str]) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.stack_trace = stack_trace


class EnvironmentFailed(Exception):
    """The environment could not start (its handler does not import) or died."""


class LambdaContext:
    """The attributes of the Python runtime's context object that handlers and Powertools read."""

    def __init__(self, function: Mapping[str, Any], request_id: str) -> None:
        self.function_name = str(function["name"])
        self.function_version = "$LATEST"
        self.invoked_function_arn = str(function["arn"])
        # The Python runtime hands this over as a string (it comes from an env variable).
        self.memory_limit_in_mb = str(function["memory_mb"])
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function['name']}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline = time.monotonic() + float(function["timeout"])

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's configured Timeout."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# -- the wire: length-prefixed JSON over a pipe ------------------------------------------


def _send(fd: int, message: Mapping[str, Any]) -> None:
    data = json.dumps(message).encode("utf-8")
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
        chunk = os.read(fd, size - len(chunks))
        if not chunk:
            raise EOFError
        chunks += chunk
    return bytes(chunks)


def _receive(fd: int, deadline: float | None = None) -> dict[str, Any]:
    (length,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size, deadline))
    message: dict[str, Any] = json.loads(_read_exactly(fd, length, deadline))
    return message


# -- the parent's side -------------------------------------------------------------------


class ExecutionEnvironment:
    """A child process holding one imported handler; not thread-safe (one invocation at a time)."""

    def __init__(self, function: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        """``function``: name, arn, handler, code_dir, layer_dirs, timeout, memory_mb (JSON-able);
        ``environ``: the function's environment variables, all the child will see."""
        self.function = dict(function)
        self.environ = dict(environ)
        self._process: subprocess.Popen[bytes] | None = None
        self._to_child = -1
        self._from_child = -1

    def start(self) -> None:
        """Spawn the child and hand it the function (it starts importing at once)."""
        to_child_read, self._to_child = os.pipe()
        self._from_child, from_child_write = os.pipe()
        env = {name: os.environ[name] for name in _PROCESS_VARIABLES if name in os.environ}
        env |= {**self.environ, "PYTHONPATH": str(_ROOT), "PYTHONUNBUFFERED": "1"}
        self._process = subprocess.Popen(  # noqa: S603 - this interpreter, this module
            [sys.executable, "-m", __name__, str(to_child_read), str(from_child_write)],
            env=env,
            pass_fds=(to_child_read, from_child_write),
            cwd=str(self.function["code_dir"]),
        )
        os.close(to_child_read)
        os.close(from_child_write)
        _send(self._to_child, self.function)

    def wait_ready(self) -> None:
        """Wait for the cold start; raises EnvironmentFailed with the import error."""
        try:
            message = _receive(self._from_child, time.monotonic() + START_TIMEOUT_S)
        except (EOFError, TimeoutError):
            self.stop()
            raise EnvironmentFailed(f"{self.function['name']}: the execution environment did not start") from None
        if message.get("kind") != "ready":
            self.stop()
            raise EnvironmentFailed(f"{message.get('errorType')}: {message.get('errorMessage')}")

    def invoke(self, event: Any, request_id: str) -> Any:
        """Run the handler with ``event``; its JSON result, or HandlerError. A handler that overruns
        the Timeout is stopped (EnvironmentFailed): the environment must then be replaced."""
        timeout = float(self.function["timeout"])
        try:
            _send(self._to_child, {"kind": "invoke", "event": event, "request_id": request_id})
            reply = _receive(self._from_child, time.monotonic() + timeout + 1.0)
        except TimeoutError:
            self.stop()
            raise HandlerError("Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds", []) from None
        except (EOFError, OSError):
            self.stop()
            raise EnvironmentFailed(f"{self.function['name']}: the execution environment died") from None
        if reply["kind"] == "error":
            raise HandlerError(reply["errorType"], reply["errorMessage"], reply["stackTrace"])
        return json.loads(reply["payload"])

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """End the child (asking first) and close the pipes. Safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            try:
                _send(self._to_child, {"kind": "stop"})
                process.wait(STOP_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        for fd in (self._to_child, self._from_child):
            if fd >= 0:
                os.close(fd)
        self._to_child = self._from_child = -1


# -- the child's side --------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    """The runtime serialises Decimal (what DynamoDB reads return) as a number."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _error(kind: str, exc: BaseException, skip_frames: int = 0) -> dict[str, Any]:
    frames = traceback.extract_tb(exc.__traceback__)[skip_frames:]
    return {
        "kind": kind,
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_list(frames),
    }


def _load_handler(function: Mapping[str, Any]) -> Any:
    """Import ``module.function`` from the code directory, the layers after it (Lambda's order:
    /var/task, then /opt/python)."""
    sys.path[:0] = [str(function["code_dir"]), *map(str, function["layer_dirs"])]
    module_path, _, attribute = str(function["handler"]).rpartition(".")
    relative = Path(*module_path.split("."))
    file = Path(function["code_dir"]) / relative.with_suffix(".py")
    if not file.is_file():
        file = Path(function["code_dir"]) / relative / "__init__.py"
    if not module_path or not file.is_file():
        raise ImportError(f"handler {function['handler']!r} not found under {function['code_dir']}")
    spec = importlib.util.spec_from_file_location(module_path, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_path] = module
    spec.loader.exec_module(module)
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise ImportError(f"{file} has no callable {attribute!r}")
    return handler


def serve(from_parent: int, to_parent: int) -> int:
    """The child: import the handler, then run invocations until told to stop."""
    function = _receive(from_parent)
    try:
        handler = _load_handler(function)
    except BaseException as exc:
        _send(to_parent, _error("init-error", exc))
        return 1
    _send(to_parent, {"kind": "ready"})
    while True:
        try:
            message = _receive(from_parent)
        except EOFError:
            return 0  # the parent is gone
        if message["kind"] == "stop":
            return 0
        context = LambdaContext(function, message["request_id"])
        try:
            result = handler(message["event"], context)
        except Exception as exc:
            _send(to_parent, _error("error", exc, skip_frames=1))  # the handler's frames, not ours
            continue
        try:
            payload = json.dumps(result, default=_json_default, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            problem = f"Unable to marshal response: {exc}"
            _send(
                to_parent,
                {"kind": "error", "errorType": "Runtime.MarshalError", "errorMessage": problem, "stackTrace": []},
            )
            continue
        _send(to_parent, {"kind": "result", "payload": payload})


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2])))
