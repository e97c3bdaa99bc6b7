"""The local runtime running a miniature of the callvault shape, so the runtime is pinned
independently of the real handlers: the SAM template deployed into moto and read back, HTTP API
events and results, SQS delivery (partial batches, redrive), the state machine, schedules,
execution environments and the local Lambda API.

The miniature (tests/integration/fixtures/mini) has an HttpApi function, an SQS queue with a
redrive DLQ and a partial-batch consumer, a scheduled function, and a STANDARD state machine
using sqs:sendMessage.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

from local.emulator.execution_environment import EnvironmentFailed, HandlerError
from local.emulator.stack import LocalStack
from tests.conftest import eventually
from tests.integration.conftest import MINI, concurrently

pytestmark = pytest.mark.integration


def publish_mini_sources(path: Path, secrets_client: Any, prefix: str, webhook_prefix: str) -> list[str]:
    """Stand-in for callvault.sources_file.publish_sources_file with the miniature's file format
    (whose sources hold nothing but a token: the webhook's copy is the whole source)."""
    ids = []
    for source in yaml.safe_load(path.read_text())["sources"]:
        for name in (f"{prefix}{source['id']}", f"{webhook_prefix}{source['id']}"):
            secrets_client.create_secret(Name=name, SecretString=json.dumps(source))
        ids.append(source["id"])
    return ids


def ledger_items(stack: LocalStack, prefix: str) -> dict[str, dict[str, Any]]:
    """Ledger items of the miniature whose key starts with ``prefix``, by key."""
    table = stack.state["table"]
    items = stack.client("dynamodb").scan(TableName=table)["Items"]
    return {item["pk"]["S"]: item for item in items if item["pk"]["S"].startswith(prefix)}


def lambda_client(stack: LocalStack) -> Any:
    """A boto3 Lambda client as an operator tool builds it, pointed at the local Lambda API."""
    return boto3.client(
        "lambda",
        endpoint_url=stack.state["lambda_endpoint_url"],
        region_name=stack.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}),
    )


def queue_depth(stack: LocalStack, queue_url: str) -> int:
    """Visible + in-flight messages of a queue."""
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


class TestMiniStack:
    """One miniature stack shared by the class (starting moto + deploying takes seconds)."""

    @pytest.fixture(scope="class")
    def stack(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
        state_file = tmp_path_factory.mktemp("local") / "state.json"
        with LocalStack(
            MINI / "template.yaml",
            sources_file=MINI / "sources.yaml",
            state_file=state_file,
            stack_name="mini-local",
            schedule_interval=0.5,
            publish_sources=publish_mini_sources,
            concurrency=2,
        ) as stack:
            stack.wait_idle(10)
            yield stack
        assert not state_file.exists(), "a stopped stack must not leave a state file behind"

    def test_state_file_tells_where_everything_is(self, stack: LocalStack) -> None:
        assert stack.state_file is not None
        state = json.loads(stack.state_file.read_text())
        base = state["webhook_base_url"]
        assert base.startswith("http://127.0.0.1:")
        assert state["webhook_url_template"] == base + "/webhooks/{source_id}"
        assert state["aws_endpoint_url"] == os.environ["AWS_ENDPOINT_URL"]
        assert state["lambda_endpoint_url"].startswith("http://127.0.0.1:")
        assert (state["region"], state["stack_name"]) == ("us-east-1", "mini-local")
        outputs = state["outputs"]
        assert state["bucket"] == outputs["RecordingsBucketName"]
        assert state["table"] == outputs["LedgerTableName"]
        assert state["queue_url"] == outputs["FetchQueueUrl"]
        assert state["dlq_url"] == outputs["FetchDeadLetterQueueUrl"]
        assert state["state_machine_arn"] == outputs["RetryStateMachineArn"]
        assert state["alert_topic_arn"] is None  # the miniature has no topic
        assert not any(key.startswith("LocalRuntime") for key in outputs)
        # The resources exist in moto under those names.
        stack.client("s3").head_bucket(Bucket=state["bucket"])
        stack.client("dynamodb").describe_table(TableName=state["table"])

    def test_functions_come_from_the_template(self, stack: LocalStack) -> None:
        assert set(stack.functions) == {"HttpEchoFunction", "SqsWorkerFunction", "TickerFunction", "NapFunction"}
        ticker = stack.functions["TickerFunction"]
        assert (ticker.handler, ticker.timeout, ticker.memory_mb) == ("app.handler", 30, 256)
        assert ticker.layer_dirs == (MINI / "layers" / "minicore",)
        # Variables arrive resolved by moto; the API URL moto cannot resolve is the local one.
        names = ["TABLE_NAME", "SOURCES_SECRET_PREFIX", "LOG_LEVEL", "WEBHOOK_BASE_URL", "AWS_LAMBDA_FUNCTION_NAME"]
        assert stack.invoke("TickerFunction", {"env": names}) == {
            "TABLE_NAME": stack.state["table"],
            "SOURCES_SECRET_PREFIX": "mini/dev/sources/",
            "LOG_LEVEL": "DEBUG",
            "WEBHOOK_BASE_URL": stack.state["webhook_base_url"],
            "AWS_LAMBDA_FUNCTION_NAME": ticker.name,
        }
        # This process keeps its own: the functions' variables are theirs alone.
        assert "TABLE_NAME" not in os.environ
        assert [m.mapping_id for m in stack.queue_mappings] == ["SqsWorkerFunctionWork"]
        assert not stack.client("lambda").list_event_source_mappings()["EventSourceMappings"]

    def test_sources_are_published_under_the_functions_prefixes(self, stack: LocalStack) -> None:
        for prefix in ("mini/dev/sources/", "mini/dev/webhook/"):
            secret = stack.client("secretsmanager").get_secret_value(SecretId=f"{prefix}mini-two")
            assert json.loads(secret["SecretString"])["webhook_token"] == "mini-two-token"

    def test_http_api_v2_event_shape(self, stack: LocalStack) -> None:
        # Given a request with repeated headers and query parameters, cookies and a JSON body
        port = int(stack.state["webhook_base_url"].rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = json.dumps({"hello": "世界"}).encode()
        connection.putrequest("POST", "/webhooks/pbx-1?a=1&a=2&b=%20x")
        for name, value in [
            ("Content-Type", "application/json"),
            ("X-Multi", "one"),
            ("X-Multi", "two"),
            ("Cookie", "c1=v1; c2=v2"),
            ("User-Agent", "WebAPI"),
            ("Content-Length", str(len(body))),
        ]:
            connection.putheader(name, value)
        connection.endheaders(body)
        # When the local API Gateway routes it
        response = connection.getresponse()
        payload = json.loads(response.read())
        # Then the function got a payload format 2.0 event, and its full response came back
        assert response.status == 202
        assert response.headers.get_all("Set-Cookie") == ["a=1", "b=2; Path=/"]
        assert response.headers["x-function"] == stack.functions["HttpEchoFunction"].name
        event = payload["event"]
        assert event["version"] == "2.0"
        assert event["routeKey"] == "POST /webhooks/{source_id}"
        assert event["rawPath"] == "/webhooks/pbx-1"
        assert event["rawQueryString"] == "a=1&a=2&b=%20x"
        assert event["queryStringParameters"] == {"a": "1,2", "b": " x"}
        assert event["pathParameters"] == {"source_id": "pbx-1"}
        assert event["cookies"] == ["c1=v1", "c2=v2"]
        assert event["headers"]["x-multi"] == "one,two"
        assert "cookie" not in event["headers"] and "Content-Type" not in event["headers"]
        assert event["body"] == body.decode() and event["isBase64Encoded"] is False
        context = event["requestContext"]
        assert context["http"] == {
            "method": "POST",
            "path": "/webhooks/pbx-1",
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": "WebAPI",
        }
        assert context["stage"] == "$default" and context["requestId"] and context["apiId"]
        assert abs(context["timeEpoch"] / 1000 - time.time()) < 60
        assert 0 < payload["remaining_ms"] <= 10_000

    def test_non_text_bodies_arrive_base64(self, stack: LocalStack) -> None:
        url = stack.state["webhook_url_template"].format(source_id="pbx-1")
        # HTTP API passes form posts and binary base64-encoded, not as text.
        form = requests.post(url, data={"k": "v w"}, timeout=10).json()["event"]
        assert form["isBase64Encoded"] is True
        assert base64.b64decode(form["body"]) == b"k=v+w"
        raw = requests.post(url, data=b"\x00\xff", headers={"Content-Type": "text/plain"}, timeout=10).json()["event"]
        assert raw["isBase64Encoded"] is True and base64.b64decode(raw["body"]) == b"\x00\xff"
        empty = requests.get(stack.state["webhook_base_url"] + "/health", timeout=10).json()["event"]
        assert "body" not in empty and "queryStringParameters" not in empty and "pathParameters" not in empty

    def test_result_shapes_map_like_http_api(self, stack: LocalStack) -> None:
        base = stack.state["webhook_base_url"]
        plain = requests.get(base + "/health?shape=plain", timeout=10)
        assert (plain.status_code, plain.headers["Content-Type"], plain.json()) == (
            200,
            "application/json",
            {"echo": "/health"},
        )
        text = requests.get(base + "/health?shape=str", timeout=10)
        assert (text.status_code, text.json()) == (200, "just text")
        binary = requests.get(base + "/health?shape=binary", timeout=10)
        assert (binary.status_code, binary.content) == (201, b"\x00\xffbin")

    def test_unknown_routes_and_oversized_payloads_are_rejected_before_the_function(self, stack: LocalStack) -> None:
        base = stack.state["webhook_base_url"]

        def http_invocations() -> int:
            # Timers and pollers of the other functions may run meanwhile: count the HTTP one only.
            return sum(r.function_id == "HttpEchoFunction" for r in stack.runner.invocations)  # type: ignore[union-attr]

        before = http_invocations()
        missing = requests.post(base + "/nowhere", timeout=10)
        assert (missing.status_code, missing.json()) == (404, {"message": "Not Found"})
        wrong_method = requests.delete(base + "/webhooks/pbx-1", timeout=10)
        assert wrong_method.status_code == 404
        huge = requests.post(base + "/webhooks/pbx-1", data=b"x" * (10 * 1024 * 1024 + 1), timeout=30)
        assert huge.status_code == 413
        assert http_invocations() == before

    def test_partial_batch_failure_redelivers_only_the_failed_message(self, stack: LocalStack) -> None:
        # Given five jobs, one of which fails on its first delivery
        sqs = stack.client("sqs")
        for index in range(5):
            job = {"id": f"batch-{index}", "fail_times": 1 if index == 2 else 0}
            sqs.send_message(QueueUrl=stack.state["queue_url"], MessageBody=json.dumps(job))
        # When the poller has drained the queue
        stack.wait_idle(15)
        # Then every job is recorded once; only the failed one was delivered twice
        items = ledger_items(stack, "job#batch-")
        assert sorted(items) == [f"job#batch-{i}" for i in range(5)]
        attempts = {key: int(item["attempt"]["N"]) for key, item in items.items()}
        assert attempts == {f"job#batch-{i}": 2 if i == 2 else 1 for i in range(5)}
        assert {item["source"]["S"] for item in items.values()} == {"aws:sqs"}
        assert queue_depth(stack, stack.state["queue_url"]) == 0
        assert queue_depth(stack, stack.state["dlq_url"]) == 0

    def test_sqs_records_look_like_lambdas(self, stack: LocalStack) -> None:
        sqs = stack.client("sqs")
        sent = sqs.send_message(
            QueueUrl=stack.state["queue_url"],
            MessageBody=json.dumps({"id": "shape"}),
            MessageAttributes={
                "kind": {"DataType": "String", "StringValue": "probe"},
                "blob": {"DataType": "Binary", "BinaryValue": b"\x01\x02"},
            },
        )
        stack.wait_idle(10)
        record = json.loads(ledger_items(stack, "job#shape")["job#shape"]["record"]["S"])
        assert record["messageId"] == sent["MessageId"] and record["receiptHandle"]
        assert record["md5OfBody"] == sent["MD5OfMessageBody"]
        assert record["md5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
        assert record["eventSource"] == "aws:sqs" and record["awsRegion"] == "us-east-1"
        assert record["eventSourceARN"] == stack.queue_mappings[0].queue_arn
        assert record["attributes"]["ApproximateReceiveCount"] == "1"
        assert int(record["attributes"]["SentTimestamp"]) > 0
        assert record["messageAttributes"]["kind"] == {
            "stringValue": "probe",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        }
        assert base64.b64decode(record["messageAttributes"]["blob"]["binaryValue"]) == b"\x01\x02"

    def test_a_raising_handler_deletes_nothing_and_the_redrive_parks_the_message(self, stack: LocalStack) -> None:
        # Given a job whose handler raises on every delivery (maxReceiveCount is 3)
        sqs = stack.client("sqs")
        sqs.send_message(QueueUrl=stack.state["queue_url"], MessageBody=json.dumps({"id": "poison", "raise": True}))
        # When it has been retried as often as the redrive policy allows
        stack.wait_idle(20)
        # Then it is not lost: it sits in the dead-letter queue, after three failed invocations
        parked = sqs.receive_message(QueueUrl=stack.state["dlq_url"], MaxNumberOfMessages=10)["Messages"]
        assert [json.loads(m["Body"])["id"] for m in parked] == ["poison"]
        errors = [record for record in stack.runner.errors if "poison" in (record.error or "")]  # type: ignore[union-attr]
        assert len(errors) == 3
        assert "job#poison" not in ledger_items(stack, "job#")

    def test_state_machine_executes_through_moto(self, stack: LocalStack) -> None:
        # Given the retry-like workflow that waits and sends the job back to the queue
        sfn = stack.client("stepfunctions")
        execution = sfn.start_execution(
            stateMachineArn=stack.state["state_machine_arn"], input=json.dumps({"job": json.dumps({"id": "via-sfn"})})
        )
        # When the stack is idle (wait_idle also waits for RUNNING executions)
        stack.wait_idle(15)
        # Then the execution succeeded and the worker processed the requeued job
        assert sfn.describe_execution(executionArn=execution["executionArn"])["status"] == "SUCCEEDED"
        assert "job#via-sfn" in ledger_items(stack, "job#")

    def test_schedules_fire_at_start_periodically_and_on_demand(self, stack: LocalStack) -> None:
        ticks_before = len(ledger_items(stack, "tick#"))
        assert ticks_before >= 1  # the start-up tick
        results = stack.run_schedules_now()
        assert results == {"TickerFunctionTick": None}
        assert len(ledger_items(stack, "tick#")) >= ticks_before + 1
        # And the timer goes on by itself (schedule_interval is 0.5 s)
        assert eventually(lambda: len(ledger_items(stack, "tick#")) >= ticks_before + 2, timeout=30)
        ticks = ledger_items(stack, "tick#")
        assert {item["detail_type"]["S"] for item in ticks.values()} == {"Scheduled Event"}

    def test_concurrent_invocations_run_in_environments_of_their_own(self, stack: LocalStack) -> None:
        # Given two requests at the same moment, each keeping a module global of the shared layer
        url = str(stack.state["webhook_base_url"]) + "/webhooks/state?shape=state"
        replies = concurrently(lambda: requests.post(url, timeout=30), lambda: requests.post(url, timeout=30))

        # Then each ran in its own process with its own module state, as Lambda runs them
        bodies = [reply.json() for reply in replies]
        assert [body["mine"] for body in bodies] == [True, True]
        assert bodies[0]["pid"] != bodies[1]["pid"]
        # And with its function's own variables (the echo function overrides LOG_LEVEL)
        assert {body["log_level"] for body in bodies} == {"INFO"}
        assert stack.invoke("TickerFunction", {"env": ["LOG_LEVEL"]}) == {"LOG_LEVEL": "DEBUG"}

    def test_an_environment_that_overruns_its_timeout_or_dies_is_replaced(self, stack: LocalStack) -> None:
        # When a handler overruns the function's 1 s Timeout, Lambda stops it
        with pytest.raises(HandlerError, match=r"Task timed out after 1\.00 seconds"):
            stack.invoke("NapFunction", {"sleep": 30})
        # And when the process dies under a handler
        with pytest.raises(EnvironmentFailed, match="died"):
            stack.invoke("NapFunction", {"exit": 3})
        # Then the next invocations get fresh environments that work
        for _ in range(3):
            assert stack.invoke("NapFunction", {"sleep": 0}) == {"slept": 0}

    def test_invoke_runs_a_handler_directly(self, stack: LocalStack) -> None:
        event = {"rawPath": "/x", "queryStringParameters": {"shape": "plain"}}
        assert stack.invoke("HttpEchoFunction", event) == {"echo": "/x"}
        with pytest.raises(KeyError):
            stack.invoke("NoSuchFunction", {})

    def test_lambda_invoke_by_name_or_arn_returns_the_handler_result(self, stack: LocalStack) -> None:
        # Given the echo function's name, full ARN and partial ARN
        client = lambda_client(stack)
        spec = stack.functions["HttpEchoFunction"]
        partial = spec.arn.split(":", 4)[4]  # 123456789012:function:name
        event = {"rawPath": "/via-lambda", "queryStringParameters": {"shape": "plain"}}
        for function_name, qualifier in [(spec.name, None), (spec.arn, None), (partial, "$LATEST")]:
            extra = {"Qualifier": qualifier} if qualifier else {}
            # When an operator tool invokes it synchronously
            reply = client.invoke(FunctionName=function_name, Payload=json.dumps(event).encode(), **extra)
            # Then the handler's return value comes back as the payload, as from Lambda
            assert (reply["StatusCode"], reply["ExecutedVersion"]) == (200, "$LATEST"), function_name
            assert "FunctionError" not in reply
            assert json.loads(reply["Payload"].read()) == {"echo": "/via-lambda"}

    def test_lambda_invoke_reports_a_raising_handler_as_unhandled(self, stack: LocalStack) -> None:
        reply = lambda_client(stack).invoke(
            FunctionName=stack.functions["TickerFunction"].name, Payload=json.dumps({"raise": "asked to"}).encode()
        )
        # A function error is no API error: 200, flagged by a header, the runtime's error object as payload
        assert (reply["StatusCode"], reply["FunctionError"]) == (200, "Unhandled")
        error = json.loads(reply["Payload"].read())
        assert (error["errorType"], error["errorMessage"]) == ("ValueError", "asked to")
        # The trace starts in the handler, as the Python runtime leaves its bootstrap out
        assert "ticker/app.py" in error["stackTrace"][0] and "raise ValueError" in error["stackTrace"][-1]

    def test_lambda_invoke_of_an_unknown_function_or_version_is_not_found(self, stack: LocalStack) -> None:
        client = lambda_client(stack)
        with pytest.raises(client.exceptions.ResourceNotFoundException) as missing:
            client.invoke(FunctionName="NoSuchFunction", Payload=b"{}")
        account = stack.functions["HttpEchoFunction"].arn.split(":")[4]
        expected = f"Function not found: arn:aws:lambda:us-east-1:{account}:function:NoSuchFunction"
        assert missing.value.response["Error"]["Message"] == expected
        assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.invoke(FunctionName=stack.functions["HttpEchoFunction"].name, Qualifier="1", Payload=b"{}")

    def test_lambda_event_invocation_answers_202_and_runs_in_the_background(self, stack: LocalStack) -> None:
        # Given an asynchronous invocation whose handler fails
        marker = f"event-{uuid.uuid4()}"
        reply = lambda_client(stack).invoke(
            FunctionName=stack.functions["TickerFunction"].name,
            InvocationType="Event",
            Payload=json.dumps({"raise": marker}).encode(),
        )
        # Then the caller only learns it was accepted
        assert reply["StatusCode"] == 202 and reply["Payload"].read() == b""
        assert "FunctionError" not in reply

        # And the handler ran in the background, its failure recorded (not reported to the caller)
        def failed_run() -> bool:
            return any(marker in (record.error or "") for record in stack.runner.errors)  # type: ignore[union-attr]

        assert eventually(failed_run, timeout=30)
        stack.wait_idle(10)

    def test_lambda_api_rejects_what_lambda_rejects(self, stack: LocalStack) -> None:
        client = lambda_client(stack)
        name = stack.functions["HttpEchoFunction"].name

        def echo_invocations() -> int:
            return sum(r.function_id == "HttpEchoFunction" for r in stack.runner.invocations)  # type: ignore[union-attr]

        before = echo_invocations()
        assert client.invoke(FunctionName=name, InvocationType="DryRun", Payload=b"{}")["StatusCode"] == 204
        with pytest.raises(client.exceptions.InvalidRequestContentException):
            client.invoke(FunctionName=name, Payload=b"{not json")
        with pytest.raises(ClientError) as too_large:
            client.invoke(FunctionName=name, Payload=json.dumps("x" * (6 * 1024 * 1024)).encode())
        assert too_large.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
        assert too_large.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
        other = requests.get(stack.state["lambda_endpoint_url"] + "/2015-03-31/functions", timeout=10)
        assert other.status_code == 404 and other.json()["message"]
        assert echo_invocations() == before
