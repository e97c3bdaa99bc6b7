"""Least privilege and encryption, read off the template as CloudFormation gets it (SAM-translated).

A function's role may allow exactly the AWS calls its code makes. The calls are derived from the
code, not listed by hand: every boto3 operation called in the modules its handler imports (at any
depth, within the core) becomes an IAM action. Module granularity sees a little more than one
function's path (``jobs.py`` holds both the queue the webhook uses and the workflow the fetcher
starts), so what a function's modules call but its own path never does is named, with the reason,
in ``NOT_ON_ITS_PATH``. The state machine's role is compared with the service integrations of its
ASL definition the same way.

With ``KmsKeyArn`` set, everything that stores data uses the key; every log group has a retention
and every queue an explicit one; the ledger's TTL attribute is one the code writes.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

from tests.sam_template import ASL, ROOT, load_template, resources_of_type, translated_template
from tests.unit.test_architecture import runtime_imports

CORE = ROOT / "layers" / "callvault"
FUNCTIONS = {
    "WebhookFunction": "webhook",
    "FetcherFunction": "fetcher",
    "PbxSessionKeeperFunction": "pbx_session_keeper",
    "ReconcilerFunction": "reconciler",
    "TranscriberFunction": "transcriber",
}
# The AWS services the code may call, with their IAM prefixes.
SERVICES = {
    "s3": "s3",
    "dynamodb": "dynamodb",
    "sqs": "sqs",
    "stepfunctions": "states",
    "secretsmanager": "secretsmanager",
    "sns": "sns",
    "lambda": "lambda",
    "kms": "kms",
    "events": "events",
    "transcribe": "transcribe",
}
# Operations authorised by an IAM action of another name (Service Authorization Reference).
IAM_ACTION_OF = {
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:HeadObject": "s3:GetObject",
    "s3:ListParts": "s3:ListMultipartUploadParts",
    "s3:ListObjectsV2": "s3:ListBucket",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
}
# Operations whose IAM action depends on whether a version is named: both are allowed.
VERSIONED_ACTIONS = {
    "s3:PutObjectTagging": "s3:PutObjectVersionTagging",
    "s3:DeleteObject": "s3:DeleteObjectVersion",
}
# Calls in a function's modules that its own path never makes.
LISTING = "SourceDirectory.all() lists the sources for the scheduled functions; this one reads one source by id"
NOT_ON_ITS_PATH: dict[str, dict[str, str]] = {
    "WebhookFunction": {
        "states:StartExecution": "jobs.RetryWorkflow is the fetcher's; the webhook uses jobs.JobQueue",
        "secretsmanager:ListSecrets": LISTING,
    },
    "FetcherFunction": {
        "dynamodb:BatchGetItem": "RecordingLedger.handled() is reconciliation's",
        "secretsmanager:ListSecrets": LISTING,
    },
    "PbxSessionKeeperFunction": {},
    "ReconcilerFunction": {
        "states:StartExecution": "jobs.RetryWorkflow is the fetcher's; reconciliation enqueues through jobs.JobQueue",
    },
    "TranscriberFunction": {},
}
# Calls a service makes with the function's permissions on its behalf (forward access).
ON_ITS_BEHALF: dict[str, dict[str, str]] = {
    "TranscriberFunction": {
        "s3:GetObject": "Amazon Transcribe reads the recording with the caller's permissions",
        "s3:PutObject": "Amazon Transcribe writes the transcript (OutputKey) with the caller's permissions",
    },
}
# Request parameters that need an IAM action of their own (Service Authorization Reference).
PARAMETER_ACTIONS = {"Tagging": "s3:PutObjectTagging"}
# What a role may allow on every resource: these actions take no resource-level permissions.
UNSCOPABLE = {
    "secretsmanager:ListSecrets",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    # CloudWatch Logs' log delivery API, which Step Functions logging uses.
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}
STATE_MACHINE_PLATFORM = UNSCOPABLE - {"secretsmanager:ListSecrets"}
# The AWS managed policies SAM attaches, and why: the Lambda platform's own needs.
MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole": "write the function's logs",
    "AWSXrayWriteOnlyAccess": "Tracing: Active",
    "service-role/AWSLambdaVPCAccessExecutionRole": "VpcConfig (network interfaces), when SubnetIds are given",
    "service-role/AWSLambdaSQSQueueExecutionRole": "the SQS event source polls and deletes the function's messages",
}
KMS_ACTIONS = {"kms:Decrypt", "kms:GenerateDataKey"}


# --------------------------------------------------------------------------------------------------
# What the code calls
# --------------------------------------------------------------------------------------------------
def boto3_operations() -> dict[str, set[str]]:
    """boto3 method name → the IAM actions of the operations of that name, for SERVICES."""
    session = botocore.session.get_session()
    operations: dict[str, set[str]] = {}
    for service, prefix in SERVICES.items():
        for operation in session.get_service_model(service).operation_names:
            action = f"{prefix}:{operation}"
            actions = operations.setdefault(xform_name(operation), set())
            actions.add(IAM_ACTION_OF.get(action, action))
            if action in VERSIONED_ACTIONS:
                actions.add(VERSIONED_ACTIONS[action])
    return operations


OPERATIONS = boto3_operations()


def module_path(module: str) -> Path | None:
    """The file of a core module (``callvault.x.y``), or None for anything else."""
    if not module.startswith("callvault"):
        return None
    base = CORE.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reachable_files(handler: Path) -> set[Path]:
    """The handler and every core module it imports, at any depth."""
    found, pending = {handler}, [handler]
    while pending:
        for target, _ in runtime_imports(pending.pop()):
            path = module_path(target)
            if path is not None and path not in found:
                found.add(path)
                pending.append(path)
    return found


def aws_calls(path: Path) -> set[str]:
    """IAM actions of the boto3 operations a file calls (``x.op(...)``, ``get_paginator("op")``)."""
    actions: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        # A parameter given by keyword or as a key of the parameters passed on (**params).
        named = node.arg if isinstance(node, ast.keyword) else node.value if isinstance(node, ast.Constant) else None
        if isinstance(named, str) and named in PARAMETER_ACTIONS:
            actions.add(PARAMETER_ACTIONS[named])
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name = node.func.attr
        if name == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
            name = str(node.args[0].value)
        actions |= OPERATIONS.get(name, set())
    return actions


def calls_of(function: str) -> set[str]:
    handler = ROOT / "functions" / FUNCTIONS[function] / "app.py"
    return set().union(*(aws_calls(path) for path in reachable_files(handler)))


# --------------------------------------------------------------------------------------------------
# What the roles allow
# --------------------------------------------------------------------------------------------------
def statements(policy_document: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """(statement, condition it depends on) for every statement, both sides of an Fn::If."""
    found = []
    for statement in policy_document["Statement"]:
        if "Fn::If" in statement:
            condition, chosen, otherwise = statement["Fn::If"]
            found += [(s, condition) for s in (chosen, otherwise) if s != {"Ref": "AWS::NoValue"}]
        else:
            found.append((statement, None))
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(role: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    return [
        found for policy in role["Properties"].get("Policies", []) for found in statements(policy["PolicyDocument"])
    ]


def allowed_actions(role: dict[str, Any]) -> set[str]:
    return {
        action
        for statement, _ in role_statements(role)
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
    }


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return translated_template()


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def roles(translated: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources_of_type(translated, "AWS::IAM::Role")


# --------------------------------------------------------------------------------------------------
# Roles: exactly the calls made
# --------------------------------------------------------------------------------------------------
def test_the_derivation_sees_the_calls_the_core_makes() -> None:
    # The derivation itself: the fetcher's multipart upload and ledger writes are found in its modules.
    assert {"s3:PutObject", "s3:AbortMultipartUpload", "dynamodb:UpdateItem", "states:StartExecution"} <= calls_of(
        "FetcherFunction"
    )
    assert "s3:PutObject" not in calls_of("WebhookFunction")


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_a_functions_role_allows_exactly_the_calls_its_code_makes(translated: dict[str, Any], function: str) -> None:
    made = calls_of(function)
    excused = NOT_ON_ITS_PATH[function]
    assert set(excused) <= made, f"{function}: NOT_ON_ITS_PATH names calls its code no longer makes"
    needed = (made - set(excused)) | set(ON_ITS_BEHALF.get(function, {}))
    allowed = allowed_actions(roles(translated)[f"{function}Role"]) - KMS_ACTIONS
    assert sorted(allowed - needed) == [], f"{function} is allowed actions no code path of it uses"
    assert sorted(needed - allowed) == [], f"{function} makes calls its role does not allow"


def test_the_state_machine_role_allows_exactly_its_service_integrations(
    translated: dict[str, Any],
) -> None:
    definition = json.loads(ASL.read_text())
    integrations = {
        f"{service}:{api[0].upper()}{api[1:]}"
        for state in definition["States"].values()
        if state["Type"] == "Task"
        for service, api in [state["Resource"].removeprefix("arn:aws:states:::").split(":")[:2]]
    }
    assert integrations == {"sqs:SendMessage", "dynamodb:UpdateItem", "sns:Publish", "events:PutEvents"}
    allowed = allowed_actions(roles(translated)["RetryStateMachineRole"]) - KMS_ACTIONS
    assert allowed == integrations | STATE_MACHINE_PLATFORM


def test_no_role_allows_every_action_or_resource_but_for_what_cannot_be_scoped(translated: dict[str, Any]) -> None:
    for name, role in roles(translated).items():
        for statement, _ in role_statements(role):
            actions = as_list(statement["Action"])
            assert not [a for a in actions if "*" in a], f"{name}: wildcard action in {statement}"
            if "*" in as_list(statement["Resource"]):
                assert set(actions) <= UNSCOPABLE, f"{name}: {sorted(set(actions) - UNSCOPABLE)} on every resource"


def test_the_key_is_used_only_by_roles_when_the_stack_has_one(translated: dict[str, Any]) -> None:
    for name, role in roles(translated).items():
        for statement, condition in role_statements(role):
            if KMS_ACTIONS & set(as_list(statement["Action"])):
                assert condition == "HasKmsKey" and statement["Resource"] == {"Ref": "KmsKeyArn"}, name


def test_functions_get_only_the_lambda_platforms_managed_policies(translated: dict[str, Any]) -> None:
    for function in FUNCTIONS:
        arns = roles(translated)[f"{function}Role"]["Properties"]["ManagedPolicyArns"]
        names = {re.sub(r"^arn:[^:]+:iam::aws:policy/", "", arn) for arn in arns}
        assert names <= set(MANAGED_POLICIES), function


# --------------------------------------------------------------------------------------------------
# Encryption and retention
# --------------------------------------------------------------------------------------------------
def with_conditions(node: Any, conditions: dict[str, bool]) -> Any:
    """The template as CloudFormation sees it under ``conditions``: Fn::If chosen, AWS::NoValue gone."""
    if isinstance(node, dict):
        if "Fn::If" in node and node["Fn::If"][0] in conditions:
            condition, chosen, otherwise = node["Fn::If"]
            return with_conditions(chosen if conditions[condition] else otherwise, conditions)
        return {
            key: with_conditions(value, conditions)
            for key, value in node.items()
            if value != {"Ref": "AWS::NoValue"} and with_conditions(value, conditions) != {"Ref": "AWS::NoValue"}
        }
    if isinstance(node, list):
        return [with_conditions(item, conditions) for item in node if item != {"Ref": "AWS::NoValue"}]
    return node


KEY = {"Ref": "KmsKeyArn"}


def test_with_a_kms_key_everything_that_stores_data_uses_it(template: dict[str, Any]) -> None:
    keyed = with_conditions(template, {"HasKmsKey": True})

    def props(kind: str) -> dict[str, dict[str, Any]]:
        return {name: r["Properties"] for name, r in resources_of_type(keyed, kind).items()}

    for name, group in props("AWS::Logs::LogGroup").items():
        assert group.get("KmsKeyId") == KEY, name
    for name, queue in props("AWS::SQS::Queue").items():
        assert queue.get("KmsMasterKeyId") == KEY and "SqsManagedSseEnabled" not in queue, name
    for name, topic in props("AWS::SNS::Topic").items():
        assert topic.get("KmsMasterKeyId") == KEY, name
    for name, machine in props("AWS::StepFunctions::StateMachine").items():
        assert machine["EncryptionConfiguration"]["Type"] == "CUSTOMER_MANAGED_KMS_KEY", name
        assert machine["EncryptionConfiguration"]["KmsKeyId"] == KEY, name
    for name, table in props("AWS::DynamoDB::Table").items():
        assert table["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": KEY}, name
    [bucket_rule] = props("AWS::S3::Bucket")["RecordingsBucket"]["BucketEncryption"][
        "ServerSideEncryptionConfiguration"
    ]
    assert bucket_rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY}
    # Function environments (names and URLs, never credentials) too.
    assert keyed["Globals"]["Function"]["KmsKeyArn"] == KEY
    # The source secrets are created by `make register-sources`, not by the stack.
    assert resources_of_type(keyed, "AWS::SecretsManager::Secret") == {}


def test_without_a_kms_key_nothing_names_one(template: dict[str, Any]) -> None:
    plain = with_conditions(template, {"HasKmsKey": False})
    assert "KmsKeyArn" not in json.dumps({"Globals": plain["Globals"], "Resources": plain["Resources"]})
    machine = plain["Resources"]["RetryStateMachine"]["Properties"]
    assert machine["EncryptionConfiguration"] == {"Type": "AWS_OWNED_KEY"}


def test_every_log_group_and_queue_has_an_explicit_retention(template: dict[str, Any]) -> None:
    for name, group in resources_of_type(template, "AWS::Logs::LogGroup").items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
    retention = {
        name: q["Properties"]["MessageRetentionPeriod"]
        for name, q in resources_of_type(template, "AWS::SQS::Queue").items()
    }
    # Fetch jobs: 4 days (alarmed at 3 hours of age); parked jobs: the SQS maximum of 14 days;
    # reconciliation requests: an hour (the schedule asks again); the example consumer's events
    # and their parking: 14 days.
    assert retention == {
        "FetchQueue": 4 * 86400,
        "FetchDeadLetterQueue": 14 * 86400,
        "ReconcileQueue": 3600,
        "TranscriptionQueue": 14 * 86400,
        "TranscriptionDeadLetterQueue": 14 * 86400,
    }


def test_the_ledger_ttl_attribute_is_one_the_code_writes(template: dict[str, Any]) -> None:
    attribute = template["Resources"]["LedgerTable"]["Properties"]["TimeToLiveSpecification"]["AttributeName"]
    writers = [path.name for path in (CORE / "callvault").rglob("*.py") if f'"{attribute}"' in path.read_text()]
    assert writers, f"the ledger's TTL attribute {attribute!r} is written by no code: use it or drop it"
