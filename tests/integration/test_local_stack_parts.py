"""The local runtime's pieces that need no running stack: template loading (short tags), the
plan for moto (definition substitution, what moto cannot wire up, template Rules), HTTP routing
and the HTTP API's accept queue, Lambda's partial-batch rules, schedule rates, and the one-line
errors for missing inputs (``LocalStack`` and ``python -m local``).

The runtime running is pinned by test_local_stack_mini.py (a miniature of the callvault shape)
and test_local_stack_real_template.py (the real template.yaml).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from local.emulator.errors import LocalStackError
from local.emulator.http_api import HttpApiServer, HttpRoute, HttpRouter
from local.emulator.moto_plan import check_rules, plan_for_moto, substitute_definition
from local.emulator.packaging import Artifacts
from local.emulator.scheduler import parse_rate_seconds
from local.emulator.sqs_poller import failed_message_ids
from local.emulator.stack import LocalStack
from local.emulator.template import load_template
from tests.conftest import ROOT
from tests.integration.conftest import MINI

pytestmark = pytest.mark.integration


def test_template_short_tags_load_as_long_form(tmp_path: Path) -> None:
    # Given a template using short intrinsic tags and an unquoted date
    template = tmp_path / "t.yaml"
    template.write_text(
        "AWSTemplateFormatVersion: 2010-09-09\n"
        "Resources:\n"
        "  Q:\n"
        "    Type: AWS::SQS::Queue\n"
        "    Properties:\n"
        "      A: !Ref X\n"
        "      B: !GetAtt Y.Arn\n"
        "      C: !Sub 'x-${AWS::Region}'\n"
        "      D: !If [Cond, !Join ['', [a, b]], !Ref AWS::NoValue]\n"
        "      E: !Select [0, !Split [',', 'a,b']]\n"
        "      F: !Condition IsProd\n"
    )
    # When it is loaded
    props = load_template(template)["Resources"]["Q"]["Properties"]
    # Then tags become CloudFormation's long form and the date stays a string
    assert load_template(template)["AWSTemplateFormatVersion"] == "2010-09-09"
    assert props["A"] == {"Ref": "X"}
    assert props["B"] == {"Fn::GetAtt": ["Y", "Arn"]}
    assert props["C"] == {"Fn::Sub": "x-${AWS::Region}"}
    assert props["D"] == {"Fn::If": ["Cond", {"Fn::Join": ["", ["a", "b"]]}, {"Ref": "AWS::NoValue"}]}
    assert props["E"] == {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]}
    assert props["F"] == {"Condition": "IsProd"}


def test_definition_substitution_keeps_context_object_paths() -> None:
    definition = '{"QueueUrl": "${QueueUrl}", "Token.$": "$$.Task.Token", "Other": "${Unknown}"}'
    result = substitute_definition(definition, {"QueueUrl": "https://q"})
    assert json.loads(result) == {"QueueUrl": "https://q", "Token.$": "$$.Task.Token", "Other": "${Unknown}"}


def test_what_moto_cannot_wire_up_is_set_aside_with_the_outputs_that_name_it() -> None:
    # Given a dashboard showing an alarm (moto's CloudFormation creates no alarms) and an output naming it
    translated = {
        "Resources": {
            "Jobs": {"Type": "AWS::SQS::Queue", "Properties": {}},
            "Board": {
                "Type": "AWS::CloudWatch::Dashboard",
                "Properties": {"DashboardBody": {"Fn::Sub": '{"alarms": ["${JobsAlarm.Arn}"]}'}},
            },
        },
        "Outputs": {
            "BoardUrl": {"Value": {"Fn::Sub": "https://console/#dashboards:name=${Board}"}},
            "JobsUrl": {"Value": {"Ref": "Jobs"}},
        },
    }
    plan = plan_for_moto(translated, Artifacts("artifacts", {}), {})
    # Then moto gets neither; the rest stays
    assert list(plan.body["Resources"]) == ["Jobs"]
    assert list(plan.body["Outputs"]) == ["JobsUrl"]


def test_template_rules_are_checked_as_cloudformation_checks_them() -> None:
    template = {
        "Parameters": {"Stage": {"Default": "dev"}, "Email": {"Default": ""}},
        "Rules": {
            "ProdHasEmail": {
                "RuleCondition": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]},
                "Assertions": [
                    {
                        "Assert": {"Fn::Not": [{"Fn::Equals": [{"Ref": "Email"}, ""]}]},
                        "AssertDescription": "prod needs Email",
                    }
                ],
            }
        },
    }
    check_rules(template, {})  # dev: the rule does not apply
    check_rules(template, {"Stage": "prod", "Email": "ops@example.com"})
    with pytest.raises(LocalStackError, match="rule ProdHasEmail refuses these parameters: prod needs Email"):
        check_rules(template, {"Stage": "prod"})
    template["Rules"]["ProdHasEmail"]["Assertions"][0]["Assert"] = {"Fn::EachMemberIn": [[], []]}
    with pytest.raises(LocalStackError, match="uses Fn::EachMemberIn"):
        check_rules(template, {"Stage": "prod"})


def test_router_prefers_specific_routes() -> None:
    router = HttpRouter(
        [
            HttpRoute("ANY", "/webhooks/{source_id}", "Any"),
            HttpRoute("POST", "/webhooks/{source_id}", "Param"),
            HttpRoute("POST", "/webhooks/health", "Literal"),
            HttpRoute("GET", "/files/{path+}", "Greedy"),
        ]
    )
    assert router.match("POST", "/webhooks/health") == (HttpRoute("POST", "/webhooks/health", "Literal"), {})
    assert router.match("POST", "/webhooks/pbx%2D1")[1] == {"source_id": "pbx-1"}  # type: ignore[index]
    assert router.match("PUT", "/webhooks/x")[0].function_id == "Any"  # type: ignore[index]
    assert router.match("GET", "/files/a/b.wav")[1] == {"path": "a/b.wav"}  # type: ignore[index]
    assert router.match("GET", "/webhooks/x/y") is None


def test_http_api_queues_a_burst_of_connections_like_a_front_end() -> None:
    # Given the HTTP API bound but not accepting yet, as while a burst of webhooks arrives
    server = HttpApiServer([])
    clients: list[socket.socket] = []
    try:
        # When 40 clients connect at once, Then every handshake completes without a SYN retry (~1 s)
        for _ in range(40):
            clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=0.5))
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_batch_item_failures_follow_lambda_rules() -> None:
    ids = ["a", "b", "c"]
    assert failed_message_ids(None, ids) == set()
    assert failed_message_ids({}, ids) == set()
    assert failed_message_ids({"batchItemFailures": []}, ids) == set()
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "b"}]}, ids) == {"b"}
    # An identifier that is empty or not in the batch fails the whole batch.
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": ""}]}, ids) == set(ids)
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, ids) == set(ids)
    assert failed_message_ids({"batchItemFailures": [{"id": "a"}]}, ids) == set(ids)


def test_rates_parse() -> None:
    assert parse_rate_seconds("rate(5 minutes)") == 300
    assert parse_rate_seconds("rate(1 hour)") == 3600
    assert parse_rate_seconds("cron(0 * * * ? *)") is None


def test_missing_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(LocalStackError, match="template not found"):
        LocalStack(tmp_path / "nope.yaml").start()
    with pytest.raises(LocalStackError, match="sources file not found"):
        LocalStack(MINI / "template.yaml", sources_file=tmp_path / "nope.yaml").start()


def test_cli_reports_a_missing_sources_file_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers" / "callvault")])}
    result = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "local", "--sources", str(tmp_path / "none.yaml"), "--state", str(tmp_path / "s.json")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: sources file {tmp_path / 'none.yaml'} does not exist"]
