"""Processes of the benchmarks: servers that announce their address, and measured runs.

Every measurement runs in a fresh ``python -m bench.…`` process, so its peak RSS and CPU time are
its own and nothing is warm from an earlier run. It gets its task as JSON on the command line and
writes its result as JSON to a file (its standard output is free for whatever the code under
measurement prints: logs, EMF metrics).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


class ServerProcess:
    """``python -m module`` that prints its address on its first line and serves until its
    standard input closes; a context manager whose ``address`` is that line."""

    def __init__(self, module: str) -> None:
        self._module = module
        self._process: subprocess.Popen[str] | None = None
        self.address = ""

    def __enter__(self) -> ServerProcess:
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", self._module],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        stdout: IO[str] | None = self._process.stdout
        assert stdout is not None
        self.address = stdout.readline().strip()  # the server binds before it prints
        if not self.address.startswith("http://"):
            self.__exit__(None, None, None)
            raise RuntimeError(f"{self._module} did not start (it printed {self.address!r})")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin:
            process.stdin.close()  # the server's signal to stop
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any AWS setting of the machine, plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "_X_AMZN"))}
    env.update(extra)
    return env


def run_measured(
    module: str, task: Mapping[str, Any], env: Mapping[str, str], python: Sequence[str] = (sys.executable,)
) -> dict[str, Any]:
    """Run ``python -m module TASK_JSON RESULT_PATH`` in a fresh process; its result, as JSON."""
    with tempfile.TemporaryDirectory(prefix="callvault-bench-") as work:
        result = Path(work) / "result.json"
        finished = subprocess.run(  # noqa: S603 - our own interpreter and module
            [*python, "-m", module, json.dumps(task), str(result)],
            cwd=ROOT,
            env=dict(env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if finished.returncode != 0 or not result.exists():
            raise RuntimeError(f"{module} {task} failed ({finished.returncode}):\n{finished.stderr[-3000:]}")
        document: dict[str, Any] = json.loads(result.read_text())
        return document


def task_arguments() -> tuple[dict[str, Any], Path]:
    """In a measured process: its task and where its result goes."""
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: python -m {sys.argv[0]} TASK_JSON RESULT_PATH")
    task: dict[str, Any] = json.loads(sys.argv[1])
    return task, Path(sys.argv[2])


def process_usage() -> dict[str, float]:
    """This whole process so far: peak resident set (MiB) and CPU seconds (user + system, all threads).

    The peak is the kernel's high-water mark of this process's memory (``VmHWM``), not
    ``ru_maxrss``: Linux carries the peak of the forked copy of the parent into ``ru_maxrss``
    across ``exec``, so every child would report at least its parent's resident set.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"peak_rss_mib": _peak_rss_kib() / 1024, "cpu_seconds": usage.ru_utime + usage.ru_stime}


def _peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])  # "VmHWM:    8760 kB"
    raise RuntimeError("/proc/self/status has no VmHWM: the benchmarks measure memory on Linux only")


def cpu_seconds() -> float:
    """CPU seconds (user + system) this process has used so far, all threads."""
    return time.process_time()
