"""Fair sharing between sources (issue 11): ``python -m bench.fair_sharing`` (``make
bench-fair-sharing``). Figures: docs/benchmarks.md.

The local stack (template.yaml in moto, the real handlers) with four fetchers and two simulated
PBXs. One is on a slow link: every download of it takes ``--slow-seconds`` before it starts (the
simulator's ``slow`` fault). The other answers at once. A quick PBX's call-end-to-archive delay
is measured for each of its calls (from its report, the moment the call ended, to the first time
the ledger shows it STORED, polled every 50 ms):

Each scenario first warms the stack up (four quick calls, not measured: every fetcher started, the
quick PBX's session open), then:

1. alone: the quick PBX ends ``--calls`` calls;
2. beside a busy slow PBX: the slow PBX ends ``--calls`` calls, and a second later the quick one;
3. the same without the slow PBX's limit (``max_concurrent_fetches: 100``), to show what the limit
   and the fair queue change.

Target (issue 11): in 2, the quick PBX's p95 delay stays within 10 s of its p95 alone; every
recording intact. Not a test: wall-clock figures depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import requests
import yaml

from local.emulator.stack import LocalStack
from local.simulators.pbx import PbxSimulator

ROOT = Path(__file__).resolve().parents[1]
ZONE = ZoneInfo("Asia/Shanghai")
TARGET_SECONDS = 10.0


def _source(source_id: str, token: str, simulator: PbxSimulator, **common: Any) -> dict[str, Any]:
    return {
        "id": source_id,
        "provider": "pbx",
        "webhook_token": token,
        "timezone": "Asia/Shanghai",
        "reconcile": {"enabled": False},
        "pbx": {"base_url": simulator.base_url, "username": "api", "password": "apipass", "read_timeout_seconds": 120},
        **common,
    }


class Watch:
    """When each call's recording was first seen STORED in the ledger."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.reported: dict[tuple[str, str], float] = {}
        self.stored: dict[tuple[str, str], float] = {}
        self.sha: dict[tuple[str, str], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            for key in [k for k in list(self.reported) if k not in self.stored]:
                reply = self._table.query(
                    KeyConditionExpression="pk = :pk",
                    ExpressionAttributeValues={":pk": f"CALL#{key[0]}#{key[1]}"},
                    ConsistentRead=True,
                )
                items = reply.get("Items", [])
                if items and all(i.get("status") == "STORED" for i in items):
                    self.stored[key] = time.monotonic()
                    self.sha[key] = str(items[0].get("sha256"))
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _report(stack: LocalStack, source_id: str, token: str, call: Any, watch: Watch) -> None:
    url = str(stack.state["webhook_url_template"]).format(source_id=source_id)
    watch.reported[(source_id, call.callid)] = time.monotonic()
    reply = requests.post(url, params={"token": token}, json=call.report, timeout=30)
    reply.raise_for_status()


def scenario(name: str, *, calls: int, slow_seconds: float, with_slow: bool, slow_limit: int | None) -> dict[str, Any]:
    quick, slow = PbxSimulator(tz=ZONE), PbxSimulator(tz=ZONE)
    quick.start()
    slow.start()
    tokens = {"quick-pbx": f"q-{uuid.uuid4().hex}", "slow-pbx": f"s-{uuid.uuid4().hex}"}
    limit = {"max_concurrent_fetches": slow_limit} if slow_limit else {}
    sources = [_source("quick-pbx", tokens["quick-pbx"], quick), _source("slow-pbx", tokens["slow-pbx"], slow, **limit)]
    with tempfile.TemporaryDirectory() as work:
        sources_file = Path(work) / "sources.yaml"
        sources_file.write_text(yaml.safe_dump({"sources": sources}))
        try:
            with LocalStack(
                ROOT / "template.yaml",
                sources_file=sources_file,
                state_file=Path(work) / "state.json",
                parameters={"LogLevel": "ERROR"},
                run_schedules=False,
                concurrency=4,
                redelivery_delay=1,
                env_overrides={"POWERTOOLS_METRICS_DISABLED": "true", "FETCH_DEFERRAL_MAX_SECONDS": "5"},
            ) as stack:
                table = boto3.resource(
                    "dynamodb", endpoint_url=stack.state["aws_endpoint_url"], region_name=stack.region
                ).Table(stack.state["table"])
                watch = Watch(table)
                # Warm up: every fetcher started, the quick PBX's session opened (not measured).
                warm = [quick.place_call(duration_s=5, push=False) for _ in range(4)]
                for call in warm:
                    _report(stack, "quick-pbx", tokens["quick-pbx"], call, watch)
                while any(("quick-pbx", c.callid) not in watch.stored for c in warm):
                    time.sleep(0.1)
                stack.wait_idle(60)
                placed: list[tuple[str, Any]] = []
                if with_slow:
                    slow.set_fault("slow", calls, seconds=slow_seconds)
                    for _ in range(calls):
                        call = slow.place_call(duration_s=10, push=False)
                        _report(stack, "slow-pbx", tokens["slow-pbx"], call, watch)
                        placed.append(("slow-pbx", call))
                    time.sleep(1.0)
                for _ in range(calls):
                    call = quick.place_call(duration_s=10, push=False)
                    _report(stack, "quick-pbx", tokens["quick-pbx"], call, watch)
                    placed.append(("quick-pbx", call))
                deadline = time.monotonic() + calls * slow_seconds + 300
                while any((s, c.callid) not in watch.stored for s, c in placed) and time.monotonic() < deadline:
                    time.sleep(0.2)
                watch.stop()
        finally:
            quick.stop()
            slow.stop()
    delays = sorted(
        watch.stored[(s, c.callid)] - watch.reported[(s, c.callid)]
        for s, c in placed
        if s == "quick-pbx" and (s, c.callid) in watch.stored
    )
    intact = sum(watch.sha.get((s, c.callid)) == c.sha256 for s, c in placed)
    return {
        "scenario": name,
        "quick_p50": statistics.median(delays) if delays else None,
        "quick_p95": delays[max(0, round(0.95 * len(delays)) - 1)] if delays else None,
        "intact": f"{intact}/{len(placed)}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fair_sharing", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=12, help="calls per PBX (default 12)")
    parser.add_argument("--slow-seconds", type=float, default=10.0, help="each slow download's delay (default 10)")
    args = parser.parse_args(argv)
    rows = [
        scenario("quick PBX alone", calls=args.calls, slow_seconds=args.slow_seconds, with_slow=False, slow_limit=None),
        scenario(
            "beside a busy slow PBX (limit 2)",
            calls=args.calls,
            slow_seconds=args.slow_seconds,
            with_slow=True,
            slow_limit=None,
        ),
        scenario(
            "same, slow PBX unlimited (100)",
            calls=args.calls,
            slow_seconds=args.slow_seconds,
            with_slow=True,
            slow_limit=100,
        ),
    ]
    print(f"{'scenario':<36} {'quick p50 (s)':>14} {'quick p95 (s)':>14} {'intact':>8}")
    for row in rows:
        p50 = f"{row['quick_p50']:.1f}" if row["quick_p50"] is not None else "-"
        p95 = f"{row['quick_p95']:.1f}" if row["quick_p95"] is not None else "-"
        print(f"{row['scenario']:<36} {p50:>14} {p95:>14} {row['intact']:>8}")
    alone, shared = rows[0]["quick_p95"], rows[1]["quick_p95"]
    met = alone is not None and shared is not None and shared <= alone + TARGET_SECONDS
    print(f"target: p95 beside a busy source within {TARGET_SECONDS:g} s of alone: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
