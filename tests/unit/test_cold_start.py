"""What a cold start loads, and how the webhook reads its event without Powertools' event handler.

The webhook answers providers with a deadline (Dypls: 700 ms), so a cold start imports only what
every request needs. Which modules a fresh interpreter holds after importing a handler and
building its dependencies (as Lambda does, with the variables Lambda sets, tracing on) is
deterministic, unlike a timing: the figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from callvault.errors import BadRequest

ROOT = Path(__file__).resolve().parents[2]

COLD_START = """
import json, sys
import app
getattr(app, sys.argv[1])()
print(json.dumps(sorted(sys.modules)))
"""


def modules_after_cold_start(function: str, init: str) -> set[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "POWERTOOLS_", "_X_AMZN"))}
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": f"callvault-{function}",
            "LAMBDA_TASK_ROOT": str(ROOT / "functions" / function),
            "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "POWERTOOLS_SERVICE_NAME": "callvault",
            "SOURCES_SECRET_PREFIX": "callvault/dev/sources/",
            "WEBHOOK_SECRET_PREFIX": "callvault/dev/webhook/",
            "FETCH_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/fetch",
            "RECONCILE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/reconcile",
            "RECORDINGS_BUCKET": "recordings",
            "LEDGER_TABLE": "ledger",
            "RETRY_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:retry",
            "WEBHOOK_BASE_URL": "https://hooks.example.com",
            # As in Lambda: the function's own directory, then the layer.
            "PYTHONPATH": os.pathsep.join([str(ROOT / "functions" / function), str(ROOT / "layers" / "callvault")]),
        }
    )
    run = subprocess.run(  # noqa: S603 - this interpreter, a script of ours
        [sys.executable, "-c", COLD_START, init], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


def test_the_webhook_cold_start_leaves_out_what_no_request_needs() -> None:
    loaded = modules_after_cold_start("webhook", "_dependencies")

    assert "callvault.sources" in loaded  # the check below is of a real cold start
    # requests: the webhook never calls a provider; YAML: sources come from Secrets Manager as
    # JSON; Powertools' event handler: every resolver it has and their event classes.
    # A provider's module: imported when a source of it is first read.
    unneeded = {"requests", "yaml", "aws_lambda_powertools.event_handler", "callvault.providers.ccc"}
    assert loaded & unneeded == set()
    assert not any(name.startswith("aws_lambda_powertools.utilities.data_classes") for name in loaded)


@pytest.mark.parametrize(("function", "init"), [("fetcher", "_fetcher"), ("reconciler", "_dependencies")])
def test_the_queue_consumers_cold_start_without_a_yaml_parser_or_powertools_batch(function: str, init: str) -> None:
    loaded = modules_after_cold_start(function, init)

    assert "callvault.sqs_batch" in loaded
    # YAML: sources come from Secrets Manager as JSON; Powertools' batch utility and its event
    # classes: callvault.sqs_batch answers a partial batch response in a few lines.
    assert "yaml" not in loaded
    assert not any(name.startswith("aws_lambda_powertools.utilities.batch") for name in loaded)
    assert not any(name.startswith("aws_lambda_powertools.utilities.data_classes") for name in loaded)


@pytest.fixture(scope="module")
def webhook() -> ModuleType:
    # Loaded under a name of its own: every function's module is called ``app``.
    spec = importlib.util.spec_from_file_location("webhook_app", ROOT / "functions" / "webhook" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def http_api_event(**overrides: Any) -> dict[str, Any]:
    with open(ROOT / "events" / "webhook-http-api.json", encoding="utf-8") as sample:
        event: dict[str, Any] = json.load(sample)
    event.update(overrides)
    return event


def test_the_webhook_reads_an_http_api_event_as_the_core_sees_a_request(webhook: ModuleType) -> None:
    event = http_api_event(
        headers={"Content-Type": "application/json", "X-Webhook-Token": "t"},
        body=base64.b64encode(b'{"action":"NewCdr"}').decode(),
        isBase64Encoded=True,
    )

    request = webhook.inbound_request(event)

    assert request.source_id == "office-pbx"
    assert request.body == b'{"action":"NewCdr"}'
    assert request.headers == {"content-type": "application/json", "x-webhook-token": "t"}
    assert request.query == {"token": "change-me-office-pbx-token"}
    assert request.source_ip == "203.0.113.10"


def test_a_body_without_headers_query_or_text_reads_as_empty(webhook: ModuleType) -> None:
    event = http_api_event()
    for absent in ("headers", "queryStringParameters", "body"):
        del event[absent]

    request = webhook.inbound_request(event)

    assert (request.body, dict(request.headers), dict(request.query)) == (b"", {}, {})


def test_a_body_that_is_not_base64_is_a_bad_request_not_a_crash(webhook: ModuleType) -> None:
    with pytest.raises(BadRequest, match="base64"):
        webhook.inbound_request(http_api_event(body="not base64!", isBase64Encoded=True))


def test_the_answer_is_compact_json_as_providers_expect(webhook: ModuleType) -> None:
    response = webhook.json_response(200, {"code": 0, "msg": "接收成功"})

    assert response["statusCode"] == 200
    assert response["headers"] == {"Content-Type": "application/json"}
    assert json.loads(response["body"]) == {"code": 0, "msg": "接收成功"}
    assert " " not in response["body"]
