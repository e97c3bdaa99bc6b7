"""One cold start, in a fresh process: ``python -m bench.cold_start_probe TASK_JSON RESULT_PATH``.

As the Lambda Python runtime does: the function's code directory goes first on ``sys.path``,
its handler module is imported, and the handler is invoked once with an event and a context.
Timed from just before the import (the interpreter's own start is left out: it is the same for
every function and not the function's doing): the import, then the first invocation. The
environment (``bench.handlers_cold_start``) points AWS at a loopback port where nothing
listens, with one attempt per request, so the invocation runs until its first AWS request,
which is refused at once: everything a cold invocation does before it waits on the network.

Nothing but the standard library is imported before the clock starts.
"""

from __future__ import annotations

import importlib
import io
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.processes import process_usage, task_arguments


class ProbeContext:
    """The attributes of the runtime's context object that handlers and Powertools read."""

    def __init__(self, function_name: str, memory_mb: str, timeout_s: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = "00000000-0000-4000-8000-000000000000"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "2026/12/02/[$LATEST]bench"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> int:
    task, result_path = task_arguments()
    event: Any = json.loads(Path(task["event"]).read_text(encoding="utf-8"))
    context = ProbeContext(task["function_name"], task["memory_mb"], task["timeout_s"])
    module_name, handler_name = task["handler"].rsplit(".", 1)
    sys.path.insert(0, task["code_dir"])
    # The handlers' logs (Powertools writes to sys.stdout as it is when the logger is made): an
    # SQS handler answers a failed record with its id and logs why, so the why is read here.
    logs = io.StringIO()
    sys.stdout = logs

    started, started_cpu = time.perf_counter(), time.process_time()
    module = importlib.import_module(module_name)
    imported = time.perf_counter()
    error: Exception | None = None
    try:
        getattr(module, handler_name)(event, context)
    except Exception as exc:
        error = exc
    invoked, invoked_cpu = time.perf_counter(), time.process_time()
    sys.stdout = sys.__stdout__
    outcome = "returned" if error is None else "".join(traceback.format_exception(error, limit=0))
    outcome += "\n" + logs.getvalue()

    result = {
        "import_ms": (imported - started) * 1000,
        "invoke_ms": (invoked - imported) * 1000,
        "total_ms": (invoked - started) * 1000,
        # CPU time (user + system, all threads): what a machine shared with other work adds to
        # the wall time (waiting for a core) is not in it.
        "cpu_ms": (invoked_cpu - started_cpu) * 1000,
        "peak_rss_mib": process_usage()["peak_rss_mib"],
        "outcome": outcome[-20000:],
    }
    result_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
