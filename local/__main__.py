"""``python -m local``: run the whole SAM application on this machine until Ctrl-C.

moto plays AWS, the stack comes from template.yaml, the real handlers run in execution
environments of their own behind a local HTTP API, SQS pollers and timers. The state file tells
demos and tests where it all is.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from callvault.errors import ConfigError
from callvault.sources_file import load_sources_file
from local.emulator.errors import LocalStackError
from local.emulator.moto_server import DEFAULT_REGION
from local.emulator.stack import DEFAULT_STACK_NAME, LocalStack
from local.simulated_providers import start_simulators, stop_simulators
from local.simulation import SimulatedSource


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__.splitlines()[0])
    parser.add_argument("--sources", required=True, help="sources YAML published to Secrets Manager")
    parser.add_argument("--state", required=True, help="where to write the state JSON (endpoints, outputs)")
    parser.add_argument("--template", default="template.yaml", help="SAM template (default: template.yaml)")
    parser.add_argument("--port", type=int, default=0, help="webhook HTTP port (default: a free one)")
    parser.add_argument("--aws-port", type=int, default=0, help="moto server port (default: a free one)")
    parser.add_argument("--stage", default="dev", help="value of the Stage parameter (default: dev)")
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="override a template parameter"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="override a function environment variable"
    )
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument("--stack-name", default=DEFAULT_STACK_NAME)
    parser.add_argument(
        "--schedule-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="run timers this often (default: the template's rate)",
    )
    parser.add_argument("--no-schedules", action="store_true", help="do not run scheduled functions")
    parser.add_argument(
        "--no-simulators",
        action="store_true",
        help="do not start provider simulators for the loopback sources of the sources file",
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="execution environments per function and pollers per queue"
    )
    parser.add_argument(
        "--redelivery-delay",
        type=int,
        default=None,
        metavar="SECONDS",
        help="redeliver failed SQS messages after this long instead of the queue's visibility timeout",
    )
    parser.add_argument(
        "--place-calls",
        type=float,
        default=None,
        metavar="SECONDS",
        help="have every simulated PBX place a recorded call this often (default: never)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def _pairs(items: list[str], option: str) -> dict[str, str]:
    """``KEY=VALUE`` strings → dict; a malformed one is a usage error."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LocalStackError(f"{option} expects KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def build_stack(args: argparse.Namespace) -> LocalStack:
    """The LocalStack the options describe."""
    return LocalStack(
        args.template,
        sources_file=args.sources,
        state_file=args.state,
        parameters=_pairs(args.param, "--param"),
        stage=args.stage,
        stack_name=args.stack_name,
        region=args.region,
        http_port=args.port,
        aws_port=args.aws_port,
        schedule_interval=args.schedule_interval,
        run_schedules=not args.no_schedules,
        concurrency=args.concurrency,
        redelivery_delay=args.redelivery_delay,
        env_overrides=_pairs(args.env, "--env"),
    )


def _stop_on_signals(stopped: threading.Event) -> None:
    """Ctrl-C and ``kill`` both stop the stack cleanly.

    SIGINT is handled explicitly too: a shell starts background jobs with it ignored, and
    then Python would never raise KeyboardInterrupt.
    """

    def handle(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def main(argv: Sequence[str] | None = None) -> int:
    """Start the stack, print where it is, wait for Ctrl-C / SIGTERM, stop it."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    stopped = threading.Event()
    simulations: dict[str, SimulatedSource] = {}
    try:
        if not args.no_simulators:
            simulations = start_simulators(load_sources_file(args.sources))
        stack = build_stack(args).start()
    except (LocalStackError, ConfigError, OSError) as error:
        stop_simulators(simulations)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    _stop_on_signals(stopped)
    try:
        for source_id, simulation in simulations.items():
            print(f"simulator:  {source_id} ({simulation.provider}) at {simulation.simulator.base_url}", flush=True)
        print(f"webhooks:   {stack.state['webhook_url_template']}", flush=True)
        print(f"AWS (moto): {stack.state['aws_endpoint_url']}", flush=True)
        print(f"state file: {stack.state_file}", flush=True)
        print("Ctrl-C stops the stack.", flush=True)
        interval = args.place_calls or 0.5
        while not stopped.wait(interval):
            if args.place_calls:
                for source_id, simulation in simulations.items():
                    webhook = str(stack.state["webhook_url_template"]).format(source_id=source_id)
                    files = simulation.place_call(webhook, 60)
                    print(f"{source_id}: call {files[0].call_id} ended, {len(files)} recording file(s)", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        stop_simulators(simulations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
