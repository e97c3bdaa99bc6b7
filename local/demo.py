"""The main job, locally: a simulated PBX places calls, the stack archives them, we verify.

``python -m local.demo`` (``make demo``) starts the local stack from ``template.yaml`` with
``local/sources.yaml`` (a PBX simulator listens where that file says), lets the session keeper
log in so the PBX pushes its reports, places a handful of recorded calls of several MB, shows
progress until every recording is settled, then prints what landed in S3 and checks every
object byte for byte (sha256) against the simulator's original. Exit 0 only if all arrived intact.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callvault.errors import ConfigError
from callvault.sources import load_sources_file
from local.simulated_providers import start_pbx_simulators
from local.simulators.pbx import PbxSimulator, SimulatedCall
from local.stack import LocalStack, LocalStackError

ROOT = Path(__file__).resolve().parents[1]
# Fast retries: the demo should show a retried fault within seconds, not minutes.
DEMO_PARAMETERS = {"RetryMaxAttempts": "5", "RetryBaseDelaySeconds": "1", "RetryMaxDelaySeconds": "4"}
CALL_SECONDS = (95, 140, 185, 230, 120)  # stereo 8 kHz 16-bit: about 3 to 7.4 MB each


@dataclass
class Outcome:
    call: SimulatedCall
    item: dict[str, Any] | None
    s3_sha256: str | None

    @property
    def intact(self) -> bool:
        item = self.item or {}
        return (
            item.get("status") == "STORED"
            and item.get("sha256") == self.call.sha256 == self.s3_sha256
            and int(item.get("size", -1)) == self.call.size
        )


def ledger_item(stack: LocalStack, source_id: str, call: SimulatedCall) -> dict[str, Any] | None:
    reply = stack.client("dynamodb").get_item(
        TableName=stack.state["table"],
        Key={"pk": {"S": f"CALL#{source_id}#{call.callid}"}, "sk": {"S": f"FILE#{call.recording}"}},
        ConsistentRead=True,
    )
    item = reply.get("Item")
    return {name: next(iter(value.values())) for name, value in item.items()} if item else None


def s3_sha256(stack: LocalStack, key: str) -> str:
    body = stack.client("s3").get_object(Bucket=stack.state["bucket"], Key=key)["Body"]
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(1024 * 1024), b""):
        digest.update(chunk)
    return digest.hexdigest()


def place_calls(simulator: PbxSimulator) -> list[SimulatedCall]:
    calls = [
        simulator.place_call(str(101 + i), str(201 + i), duration_s=seconds, channels=2, call_type="Internal")
        for i, seconds in enumerate(CALL_SECONDS)
    ]
    # A call nobody answered has no recording: the webhook acknowledges and skips it.
    simulator.place_call("105", "209", recorded=False, status="NO ANSWER")
    return calls


def wait_until_settled(stack: LocalStack, source_id: str, calls: list[SimulatedCall], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        statuses = [(ledger_item(stack, source_id, call) or {}).get("status", "QUEUED") for call in calls]
        counts = {status: statuses.count(status) for status in dict.fromkeys(statuses)}
        line = "  " + ", ".join(f"{status.lower()}: {count}" for status, count in counts.items())
        if line != shown:
            print(line, flush=True)
            shown = line
        if all(status in ("STORED", "FAILED") for status in statuses):
            return
        if time.monotonic() > deadline:
            print(f"  gave up waiting after {timeout:.0f} s", flush=True)
            return
        time.sleep(0.5)


def print_table(outcomes: list[Outcome]) -> None:
    header = f"{'call':<18} {'size':>10}  {'tries':>5}  {'sha256 ok':<9}  s3 key"
    print(header)
    print("-" * len(header))
    for outcome in outcomes:
        item = outcome.item or {}
        key = (
            item.get("s3_key", "-") if item.get("status") == "STORED" else f"{item.get('status')}: {item.get('reason')}"
        )
        tries = item.get("attempts", "-")
        ok = "yes" if outcome.intact else "NO"
        print(f"{outcome.call.callid:<18} {outcome.call.size:>10,}  {tries:>5}  {ok:<9}  {key}")


def run(sources_file: Path, state_file: Path, timeout: float) -> int:
    raw_sources = load_sources_file(sources_file)
    pbx_sources = [raw for raw in raw_sources if raw["provider"] == "pbx"]
    if not pbx_sources:
        raise ConfigError(f"{sources_file} has no PBX source to demonstrate with")
    simulators = start_pbx_simulators(pbx_sources)
    if not simulators:
        raise ConfigError(f"{sources_file}: no PBX source on loopback with a plain password to simulate")
    source_id, simulator = next(iter(simulators.items()))
    try:
        print(f"PBX simulator for source {source_id!r} at {simulator.base_url}")
        with LocalStack(
            ROOT / "template.yaml",
            sources_file=sources_file,
            state_file=state_file,
            parameters=DEMO_PARAMETERS,
            concurrency=2,
            redelivery_delay=2,
            # The handlers' JSON logs would drown the progress lines; errors still show.
            env_overrides={"POWERTOOLS_LOG_LEVEL": "ERROR"},
        ) as stack:
            print(f"local stack up: webhooks at {stack.state['webhook_url_template']}")
            print(f"state file: {state_file}")
            stack.run_schedules_now()  # the session keeper logs in; the PBX now pushes its reports
            print(f"PBX reports go to {simulator.report_url and simulator.report_url.split('?')[0]}")
            # One download fails half-way, to show that a broken transfer is retried, not half-stored.
            simulator.set_fault("truncate", 1)
            started = time.monotonic()
            calls = place_calls(simulator)
            total = sum(call.size for call in calls)
            print(f"placed {len(calls)} recorded calls ({total / 1e6:.1f} MB) and 1 unanswered call; archiving:")
            wait_until_settled(stack, source_id, calls, timeout)
            elapsed = time.monotonic() - started
            stack.wait_idle(30)
            outcomes = []
            for call in calls:
                item = ledger_item(stack, source_id, call)
                key = (item or {}).get("s3_key") if (item or {}).get("status") == "STORED" else None
                outcomes.append(Outcome(call, item, s3_sha256(stack, key) if key else None))
            print()
            print_table(outcomes)
            intact = sum(outcome.intact for outcome in outcomes)
            print()
            bucket = stack.state["bucket"]
            print(f"{intact}/{len(outcomes)} recordings archived intact in {elapsed:.1f} s (bucket {bucket})")
            return 0 if intact == len(outcomes) else 1
    finally:
        for running in simulators.values():
            running.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, default=ROOT / "local" / "sources.yaml")
    parser.add_argument("--state", type=Path, default=ROOT / ".local" / "demo-state.json")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the archive to settle")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args.sources, args.state, args.timeout)
    except (ConfigError, LocalStackError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
