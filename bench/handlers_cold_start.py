"""Cold start of each handler against a baseline: import + first invocation, in fresh processes.

What is measured (``bench.cold_start_probe``): from just before the handler module is imported
to the end of its first invocation, which runs until its first AWS request; that request is
refused at once (AWS points at a loopback port where nothing listens, one attempt per request),
so the figure is everything a cold invocation does before it waits on the network:

- webhook: ``events/webhook-http-api.json`` (a PBX report): the HTTP resolver routes it, the
  dependencies are built (settings, Secrets Manager and SQS clients), the source is read;
- fetcher: ``events/fetcher-sqs.json``: the batch is read, the job parsed, the Fetcher is
  built (DynamoDB, Secrets Manager, S3, Step Functions clients), the ledger claim is sent;
- pbx_session_keeper and reconciler: the scheduled event: dependencies built, sources listed.

The baseline (``bench/baseline_function/app.py``) is the least a Powertools function that
calls AWS does: import boto3 and ``Logger``, create the logger, inject the Lambda context, make
a Secrets Manager client and send its first request. Every process gets the environment
``template.yaml`` gives the function (intrinsics resolved with the parameters' defaults), the
variables the Lambda runtime sets (tracing on: ``_X_AMZN_TRACE_ID``, sampled), dummy
credentials. Rounds are interleaved (baseline, then each handler) after one uncounted round.
"""

from __future__ import annotations

import re
import socket
import statistics
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.lambda_site import LambdaSite
from bench.processes import ROOT, clean_environment, run_measured
from local.emulator.template import function_globals, load_template

REGION = "us-east-1"
SCHEDULED_EVENT = "events/session-keeper-schedule.json"
FUNCTIONS = {
    "webhook": ("WebhookFunction", "events/webhook-http-api.json"),
    "fetcher": ("FetcherFunction", "events/fetcher-sqs.json"),
    "pbx_session_keeper": ("PbxSessionKeeperFunction", SCHEDULED_EVENT),
    "reconciler": ("ReconcilerFunction", SCHEDULED_EVENT),
}
BASELINE = "baseline"
# What a first AWS request refused by the closed port looks like in the invocation's error.
REFUSED = re.compile(r"Could not connect to the endpoint URL|EndpointConnectionError")


def measure_cold_starts(runs: int, python: str = sys.executable, *, layer_bytecode: bool = True) -> dict[str, Any]:
    """Every probe run and the medians per function (``summary``), on ``python`` with what the
    Lambda runtime has (``bench.lambda_site``), the layer compiled or not."""
    template = load_template(ROOT / "template.yaml")
    # Bound, never listening: a connection to it is refused at once, and no one else can take it.
    with socket.socket() as closed, tempfile.TemporaryDirectory(prefix="callvault-lambda-") as work:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
        site = LambdaSite(python, Path(work), layer_bytecode=layer_bytecode)
        probes = {BASELINE: _baseline_probe(template, site, endpoint)}
        probes.update({name: _function_probe(template, site, name, endpoint) for name in FUNCTIONS})
        measured: list[dict[str, Any]] = []
        for round_number in range(runs + 1):
            for name, (task, env) in probes.items():
                result = run_measured("bench.cold_start_probe", task, env, site.command())
                if not REFUSED.search(result["outcome"]):
                    raise RuntimeError(f"{name} did not get as far as its first AWS request:\n{result['outcome']}")
                if round_number:  # round 0 only brings the files into the page cache
                    measured.append({"function": name, "round": round_number, **result})
    return {"runs": measured, "summary": _summary(measured)}


def _summary(measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in (BASELINE, *FUNCTIONS):
        group = [run for run in measured if run["function"] == name]
        rows.append(
            {
                "function": name,
                "runs": len(group),
                **{
                    field: round(statistics.median(run[field] for run in group), 1)
                    for field in ("import_ms", "invoke_ms", "total_ms", "cpu_ms", "peak_rss_mib")
                },
            }
        )
    baseline, baseline_cpu = rows[0]["total_ms"], rows[0]["cpu_ms"]
    for row in rows:
        row["vs_baseline"] = round(row["total_ms"] / baseline, 2)
        row["cpu_vs_baseline"] = round(row["cpu_ms"] / baseline_cpu, 2)
    return rows


def cold_start_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| function | import | first invocation | import + first invocation | × baseline "
        "| CPU | × baseline (CPU) | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['function']} | {row['import_ms']:.0f} ms | {row['invoke_ms']:.0f} ms | {row['total_ms']:.0f} ms "
            f"| {row['vs_baseline']:.2f} | {row['cpu_ms']:.0f} ms | {row['cpu_vs_baseline']:.2f} "
            f"| {row['peak_rss_mib']:.0f} MiB |"
        )
    return "\n".join(lines)


def _function_probe(
    template: Mapping[str, Any], site: LambdaSite, name: str, endpoint: str
) -> tuple[dict[str, Any], dict[str, str]]:
    logical_id, event = FUNCTIONS[name]
    properties = template["Resources"][logical_id]["Properties"]
    defaults = function_globals(template)
    variables = {
        **(defaults.get("Environment") or {}).get("Variables", {}),
        **(properties.get("Environment") or {}).get("Variables", {}),
    }
    environment = {key: _resolve(template, value) for key, value in variables.items()}
    task = {
        "code_dir": str(site.function(properties["CodeUri"])),
        "handler": properties.get("Handler") or defaults["Handler"],
        "event": str(ROOT / event),
        "function_name": f"callvault-bench-{logical_id}",
        "memory_mb": str(properties.get("MemorySize") or defaults.get("MemorySize", 128)),
        "timeout_s": float(properties.get("Timeout") or defaults.get("Timeout", 3)),
    }
    return task, _lambda_environment(task, environment, site, endpoint)


def _baseline_probe(
    template: Mapping[str, Any], site: LambdaSite, endpoint: str
) -> tuple[dict[str, Any], dict[str, str]]:
    task = {
        "code_dir": str(site.function("bench/baseline_function")),
        "handler": "app.handler",
        "event": str(ROOT / SCHEDULED_EVENT),
        "function_name": "callvault-bench-baseline",
        "memory_mb": str(function_globals(template).get("MemorySize", 128)),
        "timeout_s": 30.0,
    }
    return task, _lambda_environment(task, {}, site, endpoint)


def _lambda_environment(
    task: Mapping[str, Any], variables: Mapping[str, str], site: LambdaSite, endpoint: str
) -> dict[str, str]:
    """The function's variables, those the Lambda runtime sets, and AWS at the refusing port."""
    return clean_environment(
        {
            **variables,
            "AWS_LAMBDA_FUNCTION_NAME": task["function_name"],
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": task["memory_mb"],
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
            "LAMBDA_TASK_ROOT": task["code_dir"],
            "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_SESSION_TOKEN": "bench",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_RETRY_MODE": "standard",
            "PYTHONPATH": site.python_path(),
            # Lambda's code and layer are read-only: what has no bytecode is compiled every time.
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )


def _resolve(template: Mapping[str, Any], value: Any) -> str:
    """A template value with its intrinsics resolved: parameters to their defaults, a resource to
    a name of its own (it points at nothing), conditions evaluated."""
    if isinstance(value, str | int | float):
        return str(value)
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ValueError(f"cannot resolve {value!r}")
    ((function, argument),) = value.items()
    if function == "Ref":
        return _ref(template, argument)
    if function == "Fn::Sub":
        return re.sub(r"\$\{([^}]+)\}", lambda match: _ref(template, match.group(1)), argument)
    if function == "Fn::If":
        condition, when_true, when_false = argument
        return _resolve(template, when_true if _holds(template, template["Conditions"][condition]) else when_false)
    if function == "Fn::Join":
        separator, parts = argument
        items = _resolve(template, parts).split(",") if isinstance(parts, Mapping) else parts
        return separator.join(_resolve(template, part) for part in items)
    raise ValueError(f"cannot resolve {function}")


def _holds(template: Mapping[str, Any], condition: Any) -> bool:
    ((function, argument),) = condition.items()
    if function == "Fn::Equals":
        return _resolve(template, argument[0]) == _resolve(template, argument[1])
    if function == "Fn::Not":
        return not _holds(template, argument[0])
    if function == "Fn::And":
        return all(_holds(template, part) for part in argument)
    if function == "Fn::Or":
        return any(_holds(template, part) for part in argument)
    if function == "Condition":
        return _holds(template, template["Conditions"][argument])
    raise ValueError(f"cannot evaluate condition {function}")


def _ref(template: Mapping[str, Any], name: str) -> str:
    pseudo = {"AWS::Region": REGION, "AWS::URLSuffix": "amazonaws.com", "AWS::AccountId": "123456789012"}
    if name in pseudo:
        return pseudo[name]
    parameter = (template.get("Parameters") or {}).get(name)
    if parameter is not None:
        return str(parameter.get("Default", ""))
    if name in template["Resources"]:
        return f"callvault-bench-{name}"
    raise ValueError(f"unknown reference {name}")
