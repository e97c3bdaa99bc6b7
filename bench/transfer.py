"""The transfer benchmark (issue 9): ``python -m bench.transfer`` (``make bench-transfer``).

Side by side in one run, a generated file goes from an HTTP file server (``bench.file_server``,
its own process) into S3 (moto, ``bench.moto_sink``, its own process) five ways
(``bench.transfer_peers``: download-only, upload-only, naive, smart_open, callvault's real
Fetcher), each run in a fresh process, the peers interleaved round by round so the shared
machine's load falls on all of them alike; at the largest size callvault also fetches a file
whose first download breaks at 50 %. Then the cold start of each handler against a baseline
(``bench.handlers_cold_start``). Every transfer is checked (size in S3; callvault's sha256) and
the bytes the file server sent beyond the file's size are counted as re-downloaded.

Prints markdown tables and the targets of the issue, and writes ``bench/results/transfer.json``
(every run, the medians, the targets). Figures and what they mean: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import requests

from bench.dypls_pool import DyplsPool
from bench.file_server import file_path
from bench.generated_data import sha256_of
from bench.handlers_cold_start import cold_start_table, measure_cold_starts
from bench.processes import MIB, ROOT, ServerProcess, clean_environment, run_measured
from bench.targets import evaluate, targets_table
from bench.transfer_summary import peer_label, summarise, transfer_table

PEERS = ("download-only", "upload-only", "naive", "smart_open", "callvault")
BUCKET = "bench-transfer"
REGION = "us-east-1"
# The warm-up transfer that precedes the timed one in every process (see bench.transfer_peers).
WARMUP_BYTES = 64 * 1024


def aws_environment(endpoint: str) -> dict[str, str]:
    """What points every boto3 client of a measured process at the benchmark's moto."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        # The handlers' logs and metrics at INFO, as deployed (they go nowhere here).
        "POWERTOOLS_SERVICE_NAME": "callvault",
    }


def measure_transfers(sizes_mib: list[int], runs: int, break_at: float) -> list[dict[str, Any]]:
    """Every measured transfer, in the order run."""
    measured: list[dict[str, Any]] = []
    with ServerProcess("bench.moto_sink") as aws, ServerProcess("bench.file_server") as files:
        env = clean_environment(aws_environment(aws.address))
        # moto accepts any credentials
        session = boto3.session.Session(aws_access_key_id="bench", aws_secret_access_key="bench", region_name=REGION)  # noqa: S106
        s3 = session.client("s3", endpoint_url=aws.address)
        s3.create_bucket(Bucket=BUCKET)
        with DyplsPool(session, aws.address, files.address) as pool:
            for size_mib in sizes_mib:
                size = size_mib * MIB
                expected_sha256 = sha256_of(size)
                lanes = [(peer, 0.0) for peer in PEERS]
                if break_at and size_mib == max(sizes_mib):
                    lanes.append(("callvault", break_at))
                for round_number in range(1, runs + 1):
                    for peer, broken_at in lanes:
                        name = f"{peer.replace('_', '-')}-{size_mib}-{round_number}{'-broken' if broken_at else ''}"
                        task: dict[str, Any] = {"peer": peer, "bucket": BUCKET, **pool.peer_settings()}
                        if peer == "callvault":
                            task["warmup"] = {"job": pool.job(f"{name}-warmup", WARMUP_BYTES)}
                            task["timed"] = {"job": pool.job(name, size, broken_at)}
                        else:
                            task["warmup"] = _item(files.address, f"{name}-warmup", WARMUP_BYTES)
                            task["timed"] = _item(files.address, name, size)
                        result = run_measured("bench.transfer_peers", task, env)
                        served = requests.get(f"{files.address}/served/{name}", timeout=10).json()
                        _check(s3, peer, result, size, expected_sha256)
                        measured.append(
                            {
                                "peer": peer,
                                "break_at": broken_at,
                                "size_mib": size_mib,
                                "round": round_number,
                                **result,
                                "served_bytes": served["bytes"],
                                "served_requests": served["requests"],
                                "served_ranges": served["ranges"],
                                # upload-only reads the generator, not the server: nothing to re-download
                                "redownloaded_bytes": None if peer == "upload-only" else served["bytes"] - size,
                            }
                        )
                        print(_progress(measured[-1]), file=sys.stderr, flush=True)
    return measured


def _item(file_server: str, name: str, size: int) -> dict[str, Any]:
    return {"url": f"{file_server}{file_path(name, size)}", "size": size, "key": f"transfer/{name}.mp3"}


def _check(s3: Any, peer: str, result: dict[str, Any], size: int, expected_sha256: str) -> None:
    """A transfer that did not deliver the file intact is not a figure: stop with the reason.
    Then empty the bucket, so moto holds no more than one file at a time."""
    try:
        if peer == "download-only":
            if result["size"] != size:
                raise RuntimeError(f"download-only read {result['size']} of {size} bytes")
            return
        stored = s3.head_object(Bucket=BUCKET, Key=result["key"])["ContentLength"]
        if stored != size:
            raise RuntimeError(f"{peer} stored {stored} of {size} bytes")
        if peer == "callvault" and result["sha256"] != expected_sha256:
            raise RuntimeError(f"callvault stored sha256 {result['sha256']}, the file's is {expected_sha256}")
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for entry in page.get("Contents", []):
                s3.delete_object(Bucket=BUCKET, Key=entry["Key"])


def _progress(run: dict[str, Any]) -> str:
    return (
        f"{run['size_mib']} MiB {peer_label(run['peer'], run['break_at'])} (round {run['round']}):"
        f" {run['seconds']:.2f} s, peak RSS {run['peak_rss_mib']:.0f} MiB, {run['served_bytes']} bytes served"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transfer", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,100,1024", help="file sizes in MiB (default: 1 MiB, 100 MiB, 1 GiB)")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per peer and size (median)")
    parser.add_argument("--break-at", type=float, default=0.5, help="where the extra callvault run breaks (0: none)")
    parser.add_argument("--cold-start-runs", type=int, default=9, help="fresh processes per handler (median)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "transfer.json")
    args = parser.parse_args(argv)
    sizes = sorted({int(size) for size in args.sizes.split(",")})
    if not sizes or sizes[0] < 1 or args.runs < 1 or args.cold_start_runs < 1 or not 0 <= args.break_at < 1:
        parser.error("sizes and runs must be positive, --break-at from 0 to below 1")

    runs = measure_transfers(sizes, args.runs, args.break_at)
    summary = summarise(runs)
    cold_starts = measure_cold_starts(args.cold_start_runs)
    targets = evaluate(summary, cold_starts["summary"])
    print(transfer_table(summary))
    print()
    print(cold_start_table(cold_starts["summary"]))
    print()
    print(targets_table(targets))
    document = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.transfer " + " ".join(argv if argv is not None else sys.argv[1:]),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "transfer": {"runs": runs, "summary": summary},
        "cold_start": cold_starts,
        "targets": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2))
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
