"""The main job, locally: simulated providers end calls, the stack archives them, we verify.

``python -m local.demo`` (``make demo``) starts the local stack from ``template.yaml`` with
``local/sources.yaml`` (a simulator listens for every loopback source there: a PBX, CCC
2017-07-05 and 2020-07-01 instances, a Dyplsapi number pool), lets the session keeper log in
to the PBX so it pushes its reports, ends calls on every provider the way each reports them,
and loses the report of one call per provider on purpose (the PBX does not push it, the CCC
forwarder never runs, RecordingReady and the Dypls recording receipt never come). It shows
progress until every recording is settled (reconciliation finds the lost ones: the schedule
runs every few seconds here), then prints what landed in S3, how it was found, and checks
every object byte for byte (sha256) against the simulator's original. A consumer's view is
checked too: a subscription on the event bus receives a ``RecordingArchived`` event per stored
file, each valid against ``schemas/``, and every call has a ``call.json`` sidecar listing its
files. Exit 0 only if all arrived intact and the consumer's view is right.

A sources file may give a simulated provider port 0: its simulator takes a free port and the
stack is given the address it really listens on (tests run the demo so, side by side).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from callvault.errors import ConfigError
from callvault.keys import sidecar_key
from callvault.sources_file import load_sources_file
from local.consumer_contract import EventTap, problems
from local.emulator.errors import LocalStackError
from local.emulator.stack import LocalStack
from local.simulated_providers import start_simulators, stop_simulators
from local.simulation import ExpectedFile, SimulatedSource, bound_document
from local.simulators.pbx import PbxSimulator

ROOT = Path(__file__).resolve().parents[1]
# Fast retries: the demo should show a retried fault within seconds, not minutes.
# The handlers' JSON logs would drown the progress lines: errors only.
DEMO_PARAMETERS = {
    "RetryMaxAttempts": "5",
    "RetryBaseDelaySeconds": "1",
    "RetryMaxDelaySeconds": "4",
    "LogLevel": "ERROR",
}
# The schedule's pace in the demo (AWS: every 5 minutes); each source's own interval applies too.
SCHEDULE_SECONDS = 2.0


@dataclass
class Expected:
    source_id: str
    file: ExpectedFile


@dataclass
class Outcome:
    expected: Expected
    item: dict[str, Any] | None
    s3_sha256: str | None

    @property
    def intact(self) -> bool:
        item = self.item or {}
        return (
            item.get("status") == "STORED"
            and item.get("sha256") == self.expected.file.sha256 == self.s3_sha256
            and int(item.get("size", -1)) == self.expected.file.size
        )


def ledger_item(stack: LocalStack, expected: Expected) -> dict[str, Any] | None:
    """The ledger item of an expected file (by name, or the call's one file when the link names it)."""
    reply = stack.client("dynamodb").query(
        TableName=stack.state["table"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"CALL#{expected.source_id}#{expected.file.call_id}"}},
        ConsistentRead=True,
    )
    items = [{name: next(iter(value.values())) for name, value in item.items()} for item in reply["Items"]]
    wanted = f"FILE#{expected.file.file_name}" if expected.file.file_name else None
    for item in items:
        if item["sk"] == wanted or (wanted is None and not item["sk"].startswith("FILE#*")):
            return item
    return next((item for item in items if item["sk"].startswith("FILE#*")), None)  # failed before resolving


def s3_sha256(stack: LocalStack, key: str) -> str:
    body = stack.client("s3").get_object(Bucket=stack.state["bucket"], Key=key)["Body"]
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(1024 * 1024), b""):
        digest.update(chunk)
    return digest.hexdigest()


def end_calls(stack: LocalStack, simulations: dict[str, SimulatedSource]) -> list[Expected]:
    expected: list[Expected] = []
    for source_id, simulation in simulations.items():
        webhook = str(stack.state["webhook_url_template"]).format(source_id=source_id)
        # The provider's demo calls; the last one loses its report: reconciliation has to find it.
        durations = simulation.demo_calls
        for number, seconds in enumerate(durations, start=1):
            files = simulation.place_call(webhook, seconds, lose_push=number == len(durations))
            expected += [Expected(source_id, file) for file in files]
        print(f"  {source_id:<14} ({simulation.provider}): {len(durations)} calls ended, the last one's report lost")
    return expected


def wait_until_settled(stack: LocalStack, expected: list[Expected], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        statuses = [(ledger_item(stack, e) or {}).get("status", "NOT SEEN YET") for e in expected]
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
    header = f"{'source':<14} {'call':<34} {'size':>10}  {'tries':>5}  {'found by':<14}  {'sha256 ok':<9}  s3 key"
    print(header)
    print("-" * len(header))
    for outcome in outcomes:
        item = outcome.item or {}
        stored = item.get("status") == "STORED"
        key = item.get("s3_key", "-") if stored else f"{item.get('status', 'MISSING')}: {item.get('reason', '')}"
        tries = item.get("attempts", "-")
        origin = item.get("origin", "-")
        ok = "yes" if outcome.intact else "NO"
        call = outcome.expected.file.call_id
        size = outcome.expected.file.size
        print(f"{outcome.expected.source_id:<14} {call:<34} {size:>10,}  {tries:>5}  {origin:<14}  {ok:<9}  {key}")


def bind_sources(raws: list[dict[str, Any]], simulations: dict[str, SimulatedSource], path: Path) -> Path:
    """The sources file the stack gets: each simulated source at its simulator's real address."""
    bound = [
        bound_document(raw, simulations[raw["id"]].simulator.base_url) if raw["id"] in simulations else raw
        for raw in raws
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"sources": bound}, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def consumer_view(stack: LocalStack, tap: EventTap, outcomes: list[Outcome]) -> list[str]:
    """What a consumer got, checked: one valid RecordingArchived per stored file (at least one:
    delivery is at least once), and a valid sidecar per call listing exactly its stored files."""
    found: list[str] = []
    events = tap.drain()
    archived: dict[str, int] = {}
    for event in events:
        kind = event.get("detail-type", "")
        found += [f"{kind} event: {problem}" for problem in problems(kind, event.get("detail"))]
        if kind == "RecordingArchived":
            archived[event["detail"]["key"]] = archived.get(event["detail"]["key"], 0) + 1
    stored = [o.item for o in outcomes if o.item and o.item.get("status") == "STORED"]
    found += [f"no RecordingArchived event for {item['s3_key']}" for item in stored if item["s3_key"] not in archived]
    calls: dict[str, list[dict[str, Any]]] = {}
    for item in stored:
        key = sidecar_key(item["source_id"], item["call_time"], item["call_id"])
        calls.setdefault(key, []).append(item)
    for key, items in calls.items():
        body = stack.client("s3").get_object(Bucket=stack.state["bucket"], Key=key)["Body"].read()
        sidecar = json.loads(body)
        found += [f"{key}: {problem}" for problem in problems("call.json", sidecar)]
        listed = sorted((f["key"], f["sha256"]) for f in sidecar.get("files", []))
        if listed != sorted((i["s3_key"], i["sha256"]) for i in items):
            found.append(f"{key} lists {listed}, the ledger has {len(items)} stored files")
    print(
        f"a consumer received {sum(archived.values())} RecordingArchived events for {len(archived)} files"
        f" and finds {len(calls)} call sidecars: {'all valid (schemas/)' if not found else 'PROBLEMS:'}"
    )
    for problem in found:
        print(f"  {problem}")
    return found


def run(sources_file: Path, state_file: Path, timeout: float) -> int:
    raws = load_sources_file(sources_file)
    simulations = start_simulators(raws)
    if not simulations:
        raise ConfigError(f"{sources_file}: no source on loopback to simulate")
    try:
        for source_id, simulation in simulations.items():
            print(f"simulator for {source_id!r} ({simulation.provider}) at {simulation.simulator.base_url}")
        bound_sources = bind_sources(raws, simulations, state_file.with_name(state_file.stem + "-sources.yaml"))
        with LocalStack(
            ROOT / "template.yaml",
            sources_file=bound_sources,
            state_file=state_file,
            parameters=DEMO_PARAMETERS,
            concurrency=2,
            redelivery_delay=2,
            schedule_interval=SCHEDULE_SECONDS,
            # CloudWatch metrics are JSON lines on stdout (EMF); here they would drown the table.
            # A job waiting for one of its source's fetch slots tries again within 2 s, not a minute.
            env_overrides={"POWERTOOLS_METRICS_DISABLED": "true", "FETCH_DEFERRAL_MAX_SECONDS": "2"},
        ) as stack:
            print(f"local stack up: webhooks at {stack.state['webhook_url_template']}")
            tap = EventTap(stack.client("events"), stack.client("sqs"), stack.outputs["EventBusName"])
            print(f"state file: {state_file}")
            stack.run_schedules_now()  # the session keeper logs in; the PBX now pushes its reports
            for simulation in simulations.values():
                if isinstance(simulation.simulator, PbxSimulator):
                    # One transfer breaks off half-way: the PBX ignores Range, so the fetcher
                    # restarts it within the attempt; nothing is ever half-stored.
                    simulation.simulator.set_fault("truncate", 1)
            started = time.monotonic()
            print("ending calls:")
            expected = end_calls(stack, simulations)
            total = sum(e.file.size for e in expected)
            print(f"{len(expected)} recording files ({total / 1e6:.1f} MB) to archive:")
            wait_until_settled(stack, expected, timeout)
            elapsed = time.monotonic() - started
            stack.wait_idle(30)
            outcomes = []
            for e in expected:
                item = ledger_item(stack, e)
                key = (item or {}).get("s3_key") if (item or {}).get("status") == "STORED" else None
                outcomes.append(Outcome(e, item, s3_sha256(stack, key) if key else None))
            print()
            print_table(outcomes)
            intact = sum(outcome.intact for outcome in outcomes)
            recovered = sum((outcome.item or {}).get("origin") == "reconciliation" for outcome in outcomes)
            bucket = stack.state["bucket"]
            print()
            print(f"{intact}/{len(outcomes)} recordings archived intact in {elapsed:.1f} s (bucket {bucket})")
            print(f"{recovered} of them had lost their report and were found by reconciliation")
            consumer_problems = consumer_view(stack, tap, outcomes)
            return 0 if intact == len(outcomes) and not consumer_problems else 1
    finally:
        stop_simulators(simulations)


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
