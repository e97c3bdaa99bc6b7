"""Policies the SAM template must keep: lint, translation, operational guard rails, and the retry ASL.

The template is read as plain YAML (CloudFormation short-form tags become their long form), so the
tests pin what is written, not what some tool makes of it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from callvault.jobs import RetryWorkflow
from callvault.ledger import ledger_key
from callvault.models import FetchJob
from callvault.retry_policy import RetryPlan
from tests.sam_template import (
    ASL,
    REGION,
    ROOT,
    TEMPLATE,
    environment_of,
    function_property,
    load_template,
    resources_of_type,
    translated_template,
)

SECRET_LOOKING_NAME = re.compile(r"PASSWORD|SECRET_KEY|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------
# Reading the template (tests/sam_template.py)
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


# --------------------------------------------------------------------------------------------------
# Tools: sam validate --lint, and the SAM translator
# --------------------------------------------------------------------------------------------------
def test_sam_validate_lint_passes() -> None:
    sam = Path(sys.executable).parent / "sam"
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": REGION}
    result = subprocess.run(  # noqa: S603 - fixed argv, the sam next to this interpreter
        [str(sam), "validate", "--lint", "--template-file", str(TEMPLATE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return translated_template()


def test_template_translates_to_cloudformation(translated: dict[str, Any]) -> None:
    types = {r["Type"] for r in translated["Resources"].values()}
    assert {
        "AWS::Lambda::Function",
        "AWS::Lambda::LayerVersion",
        "AWS::Lambda::EventSourceMapping",
        "AWS::StepFunctions::StateMachine",
        "AWS::ApiGatewayV2::Api",
        "AWS::Events::Rule",
    } <= types
    assert not any(t.startswith("AWS::Serverless::") for t in types)


def _references(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else value.split(".")[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
                found |= _references(value)
            elif key == "DependsOn":
                found |= {value} if isinstance(value, str) else set(value)
            else:
                found |= _references(value)
    elif isinstance(node, list):
        for item in node:
            found |= _references(item)
    return found


def test_translated_template_has_no_circular_dependency(translated: dict[str, Any]) -> None:
    # cfn-lint does not see cycles that SAM creates (e.g. function env -> HttpApi -> function).
    resources = translated["Resources"]
    graph = {name: _references(r) & resources.keys() for name, r in resources.items()}
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in visiting:
            pytest.fail("circular dependency: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        visiting.add(node)
        for dep in graph[node]:
            visit(dep, [*path, node])
        visiting.discard(node)
        done.add(node)

    for name in graph:
        visit(name, [])


# --------------------------------------------------------------------------------------------------
# Builds: every makefile-built resource has its target
# --------------------------------------------------------------------------------------------------
def test_every_makefile_build_has_its_target(template: dict[str, Any]) -> None:
    for name, resource in template["Resources"].items():
        if resource.get("Metadata", {}).get("BuildMethod") != "makefile":
            continue
        props = resource["Properties"]
        source = ROOT / (props.get("CodeUri") or props["ContentUri"])
        makefile = (source / "Makefile").read_text()
        assert re.search(rf"^build-{name}:", makefile, re.MULTILINE), f"{source}/Makefile lacks build-{name}"


# --------------------------------------------------------------------------------------------------
# Queue, functions, logs
# --------------------------------------------------------------------------------------------------
def test_fetch_queue_visibility_covers_six_fetcher_timeouts(template: dict[str, Any]) -> None:
    queue = template["Resources"]["FetchQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * function_property(template, "FetcherFunction", "Timeout")


def test_fetch_queue_redrives_to_dead_letter_queue(template: dict[str, Any]) -> None:
    redrive = template["Resources"]["FetchQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["FetchDeadLetterQueue", "Arn"]}
    assert 1 <= redrive["maxReceiveCount"] <= 10
    dlq = template["Resources"]["FetchDeadLetterQueue"]["Properties"]
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_dead_letter_queue_has_an_alarm(template: dict[str, Any]) -> None:
    alarms = resources_of_type(template, "AWS::CloudWatch::Alarm").values()
    assert any(
        a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
        and {"Fn::GetAtt": ["FetchDeadLetterQueue", "QueueName"]} in [d["Value"] for d in a["Properties"]["Dimensions"]]
        for a in alarms
    )


def test_fetcher_reports_partial_batch_failures(template: dict[str, Any]) -> None:
    events = template["Resources"]["FetcherFunction"]["Properties"]["Events"]
    sqs_events = [e["Properties"] for e in events.values() if e["Type"] == "SQS"]
    assert sqs_events, "fetcher has no SQS event"
    for event in sqs_events:
        assert event["Queue"] == {"Fn::GetAtt": ["FetchQueue", "Arn"]}
        assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert event["ScalingConfig"]["MaximumConcurrency"] >= 2


def test_every_function_has_a_log_group_with_retention(template: dict[str, Any]) -> None:
    log_groups = resources_of_type(template, "AWS::Logs::LogGroup").values()
    names = {json.dumps(lg["Properties"].get("LogGroupName"), sort_keys=True): lg for lg in log_groups}
    for function in resources_of_type(template, "AWS::Serverless::Function"):
        expected = json.dumps({"Fn::Sub": f"/aws/lambda/${{{function}}}"}, sort_keys=True)
        assert expected in names, f"{function} has no /aws/lambda log group"
        assert names[expected]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_every_function_has_an_errors_alarm(template: dict[str, Any]) -> None:
    alarmed = {
        d["Value"]["Ref"]
        for a in resources_of_type(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "Errors"
        for d in a["Properties"]["Dimensions"]
    }
    assert set(resources_of_type(template, "AWS::Serverless::Function")) <= alarmed


def test_functions_share_one_environment(template: dict[str, Any]) -> None:
    # The local runner merges all function environments into one process environment.
    seen: dict[str, tuple[str, Any]] = {}
    for function in resources_of_type(template, "AWS::Serverless::Function"):
        for name, value in environment_of(template, function).items():
            if name in seen:
                assert seen[name][1] == value, f"{name} differs between {seen[name][0]} and {function}"
            else:
                seen[name] = (function, value)
    assert {
        "STAGE",
        "LOG_LEVEL",
        "POWERTOOLS_LOG_LEVEL",
        "POWERTOOLS_SERVICE_NAME",
        "RECORDINGS_BUCKET",
        "LEDGER_TABLE",
        "FETCH_QUEUE_URL",
        "RETRY_STATE_MACHINE_ARN",
        "SOURCES_SECRET_PREFIX",
        "WEBHOOK_SECRET_PREFIX",
        "WEBHOOK_BASE_URL",
        "RETRY_MAX_ATTEMPTS",
        "RETRY_BASE_DELAY_SECONDS",
        "RETRY_MAX_DELAY_SECONDS",
    } <= seen.keys()


def test_no_function_environment_holds_a_secret(template: dict[str, Any]) -> None:
    for function in resources_of_type(template, "AWS::Serverless::Function"):
        for name, value in environment_of(template, function).items():
            if SECRET_LOOKING_NAME.search(name):
                assert not isinstance(value, (str, int, float)), f"{function}: {name} holds a literal value"


# --------------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------------
def test_bucket_blocks_all_public_access(template: dict[str, Any]) -> None:
    block = template["Resources"]["RecordingsBucket"]["Properties"]["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }


def test_bucket_policy_denies_insecure_transport(template: dict[str, Any]) -> None:
    policies = [
        p["Properties"]
        for p in resources_of_type(template, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": "RecordingsBucket"}
    ]
    statements = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    assert any(
        s["Effect"] == "Deny"
        and s["Principal"] == "*"
        and s["Condition"]["Bool"]["aws:SecureTransport"] in ("false", False)
        and {"Fn::Sub": "${RecordingsBucket.Arn}/*"} in s["Resource"]
        for s in statements
    )


def test_bucket_aborts_incomplete_multipart_uploads(template: dict[str, Any]) -> None:
    rules = template["Resources"]["RecordingsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert any(
        r.get("Status") == "Enabled" and r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1
        for r in rules
    )


def test_bucket_is_versioned_and_emits_eventbridge_events(template: dict[str, Any]) -> None:
    props = template["Resources"]["RecordingsBucket"]["Properties"]
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    assert props["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"] is True
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]


def test_object_lock_is_chosen_by_parameter_and_applies_a_default_retention(template: dict[str, Any]) -> None:
    parameters, props = template["Parameters"], template["Resources"]["RecordingsBucket"]["Properties"]
    assert parameters["ObjectLockMode"]["Default"] == "NONE"
    assert parameters["ObjectLockMode"]["AllowedValues"] == ["NONE", "GOVERNANCE", "COMPLIANCE"]
    assert template["Conditions"]["HasObjectLock"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ObjectLockMode"}, "NONE"]}]}
    assert props["ObjectLockEnabled"] == {"Fn::If": ["HasObjectLock", True, {"Ref": "AWS::NoValue"}]}
    condition, locked, unlocked = props["ObjectLockConfiguration"]["Fn::If"]
    assert (condition, unlocked) == ("HasObjectLock", {"Ref": "AWS::NoValue"})
    assert locked["Rule"]["DefaultRetention"] == {
        "Mode": {"Ref": "ObjectLockMode"},
        "Days": {"Ref": "ObjectLockRetentionDays"},
    }


def test_old_versions_are_kept_unless_the_deployment_asks_to_expire_them(template: dict[str, Any]) -> None:
    # Recordings are compliance records: an overwritten or deleted version is not silently
    # removed after some default number of days.
    assert template["Parameters"]["NoncurrentVersionExpirationDays"]["Default"] == 0
    rules = template["Resources"]["RecordingsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    [conditional] = [rule["Fn::If"] for rule in rules if "Fn::If" in rule]
    condition, expiring, otherwise = conditional
    assert condition == "ExpiresNoncurrentVersions" and otherwise == {"Ref": "AWS::NoValue"}
    assert expiring["NoncurrentVersionExpiration"] == {"NoncurrentDays": {"Ref": "NoncurrentVersionExpirationDays"}}
    # Only a retention class that expires its objects removes their versions, and only its own.
    expiring_classes = [rule for rule in rules if "NoncurrentVersionExpiration" in rule]
    assert [rule["Id"] for rule in expiring_classes] == ["RetentionClassArchiveThenExpire"]
    assert all(rule["TagFilters"] and "ExpirationInDays" in rule for rule in expiring_classes)


def test_ledger_table_is_on_demand_with_point_in_time_recovery(template: dict[str, Any]) -> None:
    table = template["Resources"]["LedgerTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == [("pk", "HASH"), ("sk", "RANGE")]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


# --------------------------------------------------------------------------------------------------
# Retry state machine: static shape
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def asl() -> dict[str, Any]:
    return json.loads(ASL.read_text())


def test_asl_placeholders_match_definition_substitutions(template: dict[str, Any]) -> None:
    substitutions = template["Resources"]["RetryStateMachine"]["Properties"]["DefinitionSubstitutions"]
    placeholders = set(re.findall(r"\$\{(\w+)\}", ASL.read_text()))
    assert placeholders == set(substitutions)


def test_asl_tasks_are_service_integrations_with_retry(asl: dict[str, Any]) -> None:
    tasks = {name: s for name, s in asl["States"].items() if s["Type"] == "Task"}
    assert tasks
    for name, state in tasks.items():
        assert state["Resource"].startswith("arn:aws:states:::"), name
        assert "lambda:invoke" not in state["Resource"], name
        retried = {e for r in state.get("Retry", []) if r.get("MaxAttempts", 3) > 0 for e in r["ErrorEquals"]}
        assert "States.TaskFailed" in retried, f"{name} has no retry on States.TaskFailed"


# --------------------------------------------------------------------------------------------------
# Retry state machine: executed by moto's ASL interpreter
# --------------------------------------------------------------------------------------------------
# A PBX call from a mobile phone: its numbers are in the job's details and in the file name.
CALLER, CALLEE = "13800138000", "02161234567"
RECORDING = f"20261201103000-{CALLER}-106.wav"
FAILED_JOB = FetchJob(
    source_id="pbx-1",
    provider="pbx",
    call_id="1796197497.1772",
    call_time="2026-12-01T10:30:00+08:00",
    locator={"recording": RECORDING},
    file_name=RECORDING,
    attempt=3,
    details={"callfrom": CALLER, "callto": CALLEE, "callduraction": "65"},
)
LEDGER_KEY = {name: {"S": value} for name, value in ledger_key(FAILED_JOB).items()}
JOB = FAILED_JOB.next_attempt().to_dict()


class _ExecutionInput:
    """Catches the execution input the fetcher's RetryWorkflow would start the state machine with."""

    def start_execution(self, **request: Any) -> dict[str, str]:
        self.input = json.loads(request["input"])
        return {"executionArn": "caught"}


def _retry_input(*, give_up: bool) -> dict[str, Any]:
    """What the fetcher hands the workflow for FAILED_JOB (RetryWorkflow builds it, as in the fetcher)."""
    reason = f"PBX has no audio file {RECORDING!r} (errno 10023)" if give_up else "link expired"
    plan = RetryPlan(give_up, 0, reason, "PermanentFailure" if give_up else "LinkExpired")
    caught = _ExecutionInput()
    RetryWorkflow(lambda: caught, "arn:aws:states:us-east-1:123456789012:stateMachine:retry").hand_over(
        FAILED_JOB, plan, ledger_key(FAILED_JOB), "message-1"
    )
    return caught.input


@pytest.fixture
def retry_workflow(template: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    """Queue, ledger table and alert topic in moto, and the retry state machine wired to them.

    Each test starts one execution on its own state machine: moto 5.2.1 fails a second
    StartExecution on the same machine (getmoto/moto#10077, fixed in 5.2.5).
    """
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    with moto.mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sqs = boto3.client("sqs", region_name=REGION)
        ddb = boto3.client("dynamodb", region_name=REGION)
        sns = boto3.client("sns", region_name=REGION)
        sfn = boto3.client("stepfunctions", region_name=REGION)

        fetch_queue = sqs.create_queue(QueueName="fetch")["QueueUrl"]
        table = template["Resources"]["LedgerTable"]["Properties"]
        ddb.create_table(
            TableName="ledger",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=table["AttributeDefinitions"],
            KeySchema=table["KeySchema"],
            GlobalSecondaryIndexes=table["GlobalSecondaryIndexes"],
        )
        topic = sns.create_topic(Name="alerts")["TopicArn"]
        alerts = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        alerts_arn = sqs.get_queue_attributes(QueueUrl=alerts, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=alerts_arn, Attributes={"RawMessageDelivery": "true"})

        substitutions = {"FetchQueueUrl": fetch_queue, "LedgerTableName": "ledger", "AlertTopicArn": topic}

        def run(payload: dict[str, Any], definition: str | None = None) -> dict[str, Any]:
            definition = definition or ASL.read_text()
            for key, value in substitutions.items():
                definition = definition.replace(f"${{{key}}}", value)
            machine = sfn.create_state_machine(
                name=f"retry-{uuid.uuid4().hex[:8]}",
                definition=definition,
                roleArn="arn:aws:iam::123456789012:role/retry",
            )["stateMachineArn"]
            execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps(payload))["executionArn"]
            deadline = time.monotonic() + 60  # bounds a failure only: the loop ends with the execution
            while time.monotonic() < deadline:
                described = sfn.describe_execution(executionArn=execution)
                if described["status"] != "RUNNING":
                    return described
                time.sleep(0.05)
            pytest.fail("retry workflow did not finish")

        def messages(queue_url: str) -> list[str]:
            received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            return [m["Body"] for m in received.get("Messages", [])]

        yield {
            "run": run,
            "ddb": ddb,
            "sqs": sqs,
            "fetch_queue": fetch_queue,
            "alerts": alerts,
            "messages": messages,
        }


def test_retry_workflow_requeues_the_job_unchanged(retry_workflow) -> None:
    # Given a job the fetcher wants retried
    # When the workflow runs
    result = retry_workflow["run"](_retry_input(give_up=False))
    # Then the job is back on the fetch queue as JSON, and nothing is marked failed
    assert result["status"] == "SUCCEEDED"
    assert [json.loads(body) for body in retry_workflow["messages"](retry_workflow["fetch_queue"])] == [JOB]
    assert "Item" not in retry_workflow["ddb"].get_item(TableName="ledger", Key=LEDGER_KEY)


def test_retry_workflow_gives_up_marks_failed_and_alerts_without_phone_numbers(retry_workflow) -> None:
    # Given a job the fetcher gives up on, of a call whose numbers are in its details and file name
    result = retry_workflow["run"](_retry_input(give_up=True))
    # Then the execution fails as RetriesExhausted and the ledger says FAILED with the whole reason
    assert result["status"] == "FAILED"
    assert result["error"] == "RetriesExhausted"
    item = retry_workflow["ddb"].get_item(TableName="ledger", Key=LEDGER_KEY)["Item"]
    assert item["status"] == {"S": "FAILED"}
    assert item["reason"] == {"S": f"PBX has no audio file {RECORDING!r} (errno 10023)"}
    assert item["failed_at"]["S"]
    assert retry_workflow["messages"](retry_workflow["fetch_queue"]) == []
    # And operators hear what they need to find and retry it, and not who called whom
    [alert] = retry_workflow["messages"](retry_workflow["alerts"])
    assert CALLER not in alert and CALLEE not in alert
    message = json.loads(alert)
    assert {key: message[key] for key in ("status", "source_id", "provider", "call_id", "error", "attempt")} == {
        "status": "FAILED",
        "source_id": "pbx-1",
        "provider": "pbx",
        "call_id": "1796197497.1772",
        "error": "PermanentFailure",
        "attempt": 3,
    }
    assert message["reason"] == "PBX has no audio file '#######-#######-106.wav' (errno 10023)"
    assert message["ledger_key"] == "CALL#pbx-1#1796197497.1772"
    assert message["inspect"] == "callvault status pbx-1 1796197497.1772"
    assert message["retry"] == "callvault retry pbx-1 1796197497.1772"


@pytest.mark.parametrize("final", ["STORED", "ERASED"])
def test_retry_workflow_never_overwrites_a_stored_recording_or_an_erasure(retry_workflow, final: str) -> None:
    # Given a concurrent delivery already archived the recording, or the call was erased meanwhile
    retry_workflow["ddb"].put_item(TableName="ledger", Item={**LEDGER_KEY, "status": {"S": final}})
    # When the workflow is told to give up
    result = retry_workflow["run"](_retry_input(give_up=True))
    # Then the record stays as it is and nobody is alerted
    assert result["status"] == "SUCCEEDED"
    item = retry_workflow["ddb"].get_item(TableName="ledger", Key=LEDGER_KEY)["Item"]
    assert item["status"] == {"S": final}
    assert retry_workflow["messages"](retry_workflow["alerts"]) == []


# --------------------------------------------------------------------------------------------------
# samconfig.toml
# --------------------------------------------------------------------------------------------------
def test_samconfig_deploys_each_stage_with_its_own_parameters() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert config["version"] == 0.1
    assert config["default"]["global"]["parameters"]["stack_name"]
    for stage in ("dev", "prod"):
        deploy = config[stage]["deploy"]["parameters"]
        assert deploy["capabilities"] == "CAPABILITY_IAM"
        assert f"Stage={stage}" in deploy["parameter_overrides"].split()
        assert config[stage]["validate"]["parameters"]["lint"] is True


def test_retry_workflow_gives_up_explicitly_when_the_job_cannot_be_requeued(retry_workflow) -> None:
    # Given the fetch queue is gone (and, to keep the test short, RequeueJob retries no more)
    retry_workflow["sqs"].delete_queue(QueueUrl=retry_workflow["fetch_queue"])
    asl = json.loads(ASL.read_text())
    for retry in asl["States"]["RequeueJob"]["Retry"]:
        retry["MaxAttempts"] = 0
    # When the workflow tries to hand the job back
    result = retry_workflow["run"](_retry_input(give_up=False), json.dumps(asl))
    # Then the ledger says FAILED with why, instead of a retry that will never come
    assert result["status"] == "FAILED"
    item = retry_workflow["ddb"].get_item(TableName="ledger", Key=LEDGER_KEY)["Item"]
    assert item["status"] == {"S": "FAILED"}
    assert item["error"] == {"S": "RequeueFailed"}
    assert item["reason"]["S"].startswith("could not re-enqueue the job after the wait")
    [alert] = retry_workflow["messages"](retry_workflow["alerts"])
    assert json.loads(alert)["reason"].startswith("could not re-enqueue the job after the wait")


def test_the_failed_event_has_what_it_needs_on_both_ways_to_give_up(asl: dict[str, Any]) -> None:
    """The fetcher's give-up and a requeue that failed both reach AnnounceFailure: every
    ``$.retry.…`` it reads must survive RequeueFailed, which rebuilds ``$.retry``."""
    detail = asl["States"]["AnnounceFailure"]["Parameters"]["Entries"][0]["Detail"]
    read = {path.split(".")[2] for path in detail.values() if isinstance(path, str) and path.startswith("$.retry.")}
    rebuilt = {name.removesuffix(".$") for name in asl["States"]["RequeueFailed"]["Parameters"]}
    assert read and read <= rebuilt, sorted(read - rebuilt)
    # and the failure time the ledger and the event share is noted before the ledger is marked
    assert asl["States"]["RequeueFailed"]["Next"] == asl["States"]["ShouldGiveUp"]["Choices"][0]["Next"]
    assert asl["States"]["NoteFailureTime"]["Next"] == "MarkFailed"
