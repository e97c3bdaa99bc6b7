"""Benchmarks: ``python -m bench`` (``make bench``). Figures and targets: docs/benchmarks.md.

(The transfer benchmark, callvault against its peers and the handlers' cold starts, is
``python -m bench.transfer``: ``make bench-transfer``.)

1. S3 streaming (the fetcher's writer): files of growing size streamed through
   ``callvault.streaming.upload_stream`` into a moto server running in its own process, so
   the measured process holds only our side. Throughput without tracing, then the peak of
   Python allocations (tracemalloc) in a second run: it must not grow with the file.
2. Webhook latency: the local stack (template.yaml in moto, real handlers) answering
   Dyplsapi receipt batches of five mixed records over HTTP, as the platform sends them
   (deadline 700 ms), while the fetcher archives what they announce in the same process
   (so the figures include that contention; in AWS each function has its own CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import requests
import yaml

from callvault.streaming import upload_stream

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chunks(total: int, size: int = MIB) -> Iterator[bytes]:
    """Deterministic non-repeating-looking data, generated on the fly (nothing held in memory)."""
    block = os.urandom(size)
    sent = 0
    counter = 0
    while sent < total:
        part = block[: min(size, total - sent)]
        counter += 1
        yield counter.to_bytes(8, "big") + part[8:] if len(part) > 8 else part
        sent += len(part)


def bench_streaming(sizes_mib: list[int]) -> list[dict[str, Any]]:
    port = _free_port()
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",  # noqa: S106 - moto accepts anything
        )
        for _ in range(100):
            try:
                s3.create_bucket(Bucket="bench-recordings")
                break
            except Exception:  # the server is still starting
                time.sleep(0.1)
        results = []
        for size in sizes_mib:
            total = size * MIB
            started = time.perf_counter()
            stored = upload_stream(
                s3,
                bucket="bench-recordings",
                key=f"speed/{size}.bin",
                chunks=_chunks(total),
                expected_size=total,
                content_type="audio/wav",
                metadata={},
            )
            seconds = time.perf_counter() - started
            assert stored.size == total
            tracemalloc.start()
            upload_stream(
                s3,
                bucket="bench-recordings",
                key=f"memory/{size}.bin",
                chunks=_chunks(total),
                expected_size=total,
                content_type="audio/wav",
                metadata={},
            )
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            results.append(
                {
                    "file_mib": size,
                    "seconds": round(seconds, 2),
                    "mib_per_s": round(size / seconds, 1),
                    "peak_python_mib": round(peak / MIB, 1),
                }
            )
            s3.delete_object(Bucket="bench-recordings", Key=f"speed/{size}.bin")
            s3.delete_object(Bucket="bench-recordings", Key=f"memory/{size}.bin")
        return results
    finally:
        server.terminate()
        server.wait(10)


def bench_webhook(batches: int) -> dict[str, Any]:
    from local.emulator.stack import LocalStack
    from local.simulators.dypls import DyplsSimulator

    simulator = DyplsSimulator(credentials={"LTAI-bench": "bench-secret"}, pool_keys={"FC123456"}).start()
    work = Path(tempfile.mkdtemp(prefix="callvault-bench-"))
    token = "bench-pool-token-0123456789"  # noqa: S105 - a local test token
    access = {
        "endpoint": simulator.base_url,
        "access_key_id": "LTAI-bench",
        "access_key_secret": "bench-secret",
        "download_hosts": ["127.0.0.1"],
    }
    # The same pool twice: as configured by default (a call report notes an expected recording),
    # and as a pool that records nothing (a call report is acknowledged, nothing enqueued).
    sources = [
        {"id": "bench-pool", "provider": "dypls", "webhook_token": token, "dypls": {"pool_key": "FC123456", **access}},
        {
            "id": "bench-silent",
            "provider": "dypls",
            "webhook_token": token,
            "dypls": {"pool_key": "FC123456", "records_calls": False, **access},
        },
    ]
    (work / "sources.yaml").write_text(yaml.safe_dump({"sources": sources}))
    try:
        with LocalStack(
            ROOT / "template.yaml",
            sources_file=work / "sources.yaml",
            run_schedules=False,
            parameters={"LogLevel": "ERROR"},  # the handlers' logs would drown the figures
        ) as stack:
            template = str(stack.state["webhook_url_template"])
            session = requests.Session()

            def post(source_id: str, batch: list[dict[str, Any]]) -> float:
                started = time.perf_counter()
                reply = session.post(template.format(source_id=source_id) + f"?token={token}", json=batch, timeout=10)
                assert reply.status_code == 200, reply.text
                return (time.perf_counter() - started) * 1000

            def reports() -> list[dict[str, Any]]:
                return [simulator.secret_report(simulator.place_call(duration_s=5)) for _ in range(5)]

            silent = [post("bench-silent", reports()) for _ in range(batches)]
            expected = [post("bench-pool", reports()) for _ in range(batches)]
            mixed = []
            for _ in range(batches):
                calls = [simulator.place_call(duration_s=5, ready_after_s=0) for _ in range(3)]
                batch = [
                    simulator.secret_report(calls[0]),
                    simulator.secret_recording(calls[0]),
                    simulator.secret_recording(calls[1]),
                    simulator.secret_report(calls[2]),
                    simulator.secret_recording(calls[2]),
                ]
                mixed.append(post("bench-pool", batch))
            return {
                "batches": batches,
                "records_per_batch": 5,
                "reports_nothing_enqueued": _percentiles(silent),
                "reports_noted_as_expected": _percentiles(expected),
                "mixed_while_fetching": _percentiles(mixed),
            }
    finally:
        simulator.stop()


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 1),
        "max_ms": round(ordered[-1], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,64,256", help="file sizes in MiB for the streaming bench")
    parser.add_argument("--batches", type=int, default=100, help="Dypls receipt batches for the webhook bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args(argv)
    streaming = bench_streaming([int(size) for size in args.sizes.split(",")])
    for row in streaming:
        print(
            f"stream {row['file_mib']:>4} MiB: {row['mib_per_s']:>6} MiB/s, "
            f"peak Python memory {row['peak_python_mib']} MiB"
        )
    webhook = bench_webhook(args.batches)
    for name in ("reports_nothing_enqueued", "reports_noted_as_expected", "mixed_while_fetching"):
        row = webhook[name]
        print(
            f"webhook, {webhook['batches']} Dypls batches of 5 records ({name.replace('_', ' ')}): "
            f"p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, p99 {row['p99_ms']} ms, max {row['max_ms']} ms"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"streaming": streaming, "webhook": webhook}, indent=2))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
