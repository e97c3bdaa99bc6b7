"""The handlers are traced as they are in Lambda: the invocation and each AWS call it makes become
X-Ray subsegments sent to the daemon; provider HTTP is not traced (its URLs are bearer credentials).

The real webhook handler runs in a process of its own (the Tracer patches botocore process-wide),
with the variables Lambda sets, against moto in that process; the X-Ray daemon is a UDP socket
bound once on an ephemeral port, read after the process has ended.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "change-me-office-pbx-token"  # the token of events/webhook-http-api.json

HANDLER_RUN = """
import json, sys
from moto import mock_aws
import boto3

with mock_aws():
    boto3.client("sqs").create_queue(QueueName="fetch")
    from callvault.sources import webhook_document
    source = {
        "id": "office-pbx", "provider": "pbx", "webhook_token": sys.argv[1], "timezone": "Asia/Shanghai",
        "pbx": {"base_url": "http://127.0.0.1:18088", "username": "api", "password": "apipass"},
    }
    # The webhook reads its own copy of the source, without the provider credentials.
    boto3.client("secretsmanager").create_secret(
        Name="callvault/dev/webhook/office-pbx", SecretString=json.dumps(webhook_document(source))
    )
    sys.path.insert(0, "functions/webhook")
    import app
    import aws_xray_sdk.core.patcher

    class Context:
        function_name = "callvault-WebhookFunction"
        memory_limit_in_mb = 256
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:callvault-WebhookFunction"
        aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"

    with open("events/webhook-http-api.json") as sample:
        reply = app.handler(json.load(sample), Context())
    print(json.dumps({"status": reply["statusCode"], "patched": sorted(aws_xray_sdk.core.patcher._PATCHED_MODULES)}))
"""


@pytest.fixture
def daemon() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def received(sock: socket.socket) -> list[dict[str, Any]]:
    """Every trace document the 'daemon' holds (each datagram: a JSON header line, then the document)."""
    sock.setblocking(False)
    documents = []
    while True:
        try:
            datagram = sock.recv(65535)
        except BlockingIOError:
            return documents
        documents.append(json.loads(datagram.decode().split("\n", 1)[1]))


def test_a_webhook_invocation_is_traced_with_its_aws_calls(daemon: socket.socket, tmp_path: Path) -> None:
    port = daemon.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "POWERTOOLS_", "_X_AMZN"))}
    env.update(
        {
            # What Lambda sets, with active tracing on a sampled request
            "AWS_LAMBDA_FUNCTION_NAME": "callvault-WebhookFunction",
            "LAMBDA_TASK_ROOT": str(ROOT / "functions" / "webhook"),
            "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{port}",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            # The template's environment
            "POWERTOOLS_SERVICE_NAME": "callvault",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "SOURCES_SECRET_PREFIX": "callvault/dev/sources/",
            "WEBHOOK_SECRET_PREFIX": "callvault/dev/webhook/",
            "FETCH_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/fetch",
            "RECORDINGS_BUCKET": "recordings",
            "LEDGER_TABLE": "ledger",
            "RETRY_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:retry",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "callvault"), str(ROOT)]),
        }
    )
    script = tmp_path / "run_handler.py"
    script.write_text(HANDLER_RUN)

    run = subprocess.run(  # noqa: S603 - this interpreter, a script of ours
        [sys.executable, str(script), TOKEN], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert run.returncode == 0, run.stderr
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 200
    # Only boto3 (botocore) is instrumented: requests, which downloads recordings, is not.
    assert outcome["patched"] == ["botocore"]
    documents = received(daemon)
    names = [document["name"] for document in documents]
    assert "## handler" in names
    calls = {(d["name"], d.get("aws", {}).get("operation")) for d in documents if d.get("namespace") == "aws"}
    assert {("secretsmanager", "GetSecretValue"), ("sqs", "SendMessageBatch")} <= calls
    [invocation] = [document for document in documents if document["name"] == "## handler"]
    assert invocation["annotations"]["Service"] == "callvault"
    assert invocation["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    # The response (what the provider was answered) is not recorded in the trace
    assert "handler response" not in json.dumps(invocation.get("metadata", {}))
