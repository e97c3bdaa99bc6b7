"""Alerts reach someone, every silent-loss mode is alarmed and has a runbook, and what operators
see (dashboard, access log, custom metrics) is wired to what the code publishes.

Read off template.yaml as written (tests/sam_template.py) and docs/operations.md.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from local.emulator.errors import LocalStackError
from local.emulator.moto_plan import check_rules
from tests.sam_template import ROOT, function_property, load_template, resources_of_type

OPERATIONS = ROOT / "docs" / "operations.md"
EVERY_DESTINATION = {
    "Fn::If": [
        "HasAlertActionArns",
        {"Fn::Split": [",", {"Fn::Sub": "${AlertTopic},${AlertActionArns}"}]},
        [{"Ref": "AlertTopic"}],
    ]
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in resources_of_type(template, "AWS::CloudWatch::Alarm").items()}


def watched(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads: its own, or those of its metric math."""
    if "MetricName" in alarm:
        return [
            {
                "Namespace": alarm["Namespace"],
                "MetricName": alarm["MetricName"],
                "Dimensions": alarm.get("Dimensions", []),
            }
        ]
    return [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]


def alarm_on(template: dict[str, Any], namespace: str, metric: str, dimension: Any = None) -> dict[str, Any]:
    """The one alarm reading ``namespace/metric`` (with a dimension of that value, if given)."""
    found = [
        alarm
        for alarm in alarms(template).values()
        for m in watched(alarm)
        if (m["Namespace"], m["MetricName"]) == (namespace, metric)
        and (dimension is None or dimension in [d["Value"] for d in m.get("Dimensions", [])])
    ]
    assert len(found) == 1, f"{len(found)} alarms on {namespace}/{metric} {dimension or ''}"
    return found[0]


# --------------------------------------------------------------------------------------------------
# Alerts reach someone
# --------------------------------------------------------------------------------------------------
def test_every_alarm_sends_alarm_and_ok_to_the_topic_and_every_given_destination(template: dict[str, Any]) -> None:
    for name, alarm in alarms(template).items():
        assert alarm["AlarmActions"] == EVERY_DESTINATION, name
        assert alarm["OKActions"] == EVERY_DESTINATION, name
    subscription = template["Resources"]["AlertEmailSubscription"]
    assert subscription["Condition"] == "HasAlertEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlertEmail"}


@pytest.mark.parametrize(
    ("parameters", "refused"),
    [
        ({"Stage": "prod"}, True),
        ({"Stage": "prod", "AlertEmail": "oncall@example.com"}, False),
        ({"Stage": "prod", "AlertActionArns": "arn:aws:sns:eu-west-1:123456789012:pager"}, False),
        ({"Stage": "dev"}, False),
    ],
)
def test_a_production_stack_without_an_alert_destination_is_refused_at_deploy_time(
    template: dict[str, Any], parameters: dict[str, str], refused: bool
) -> None:
    # The template's Rules, evaluated as CloudFormation does before it changes anything
    if refused:
        with pytest.raises(LocalStackError, match="Stage=prod needs an alert destination"):
            check_rules(template, parameters)
    else:
        check_rules(template, parameters)


@pytest.mark.parametrize(
    ("parameter", "value", "accepted"),
    [
        ("AlertEmail", "", True),
        ("AlertEmail", "oncall@example.com", True),
        ("AlertEmail", "oncall", False),
        ("AlertEmail", "a@example.com,b@example.com", False),
        ("AlertActionArns", "", True),
        ("AlertActionArns", "arn:aws:sns:eu-west-1:123456789012:pager", True),
        (
            "AlertActionArns",
            "arn:aws:sns:eu-west-1:123456789012:chat,arn:aws:ssm-incidents::123456789012:response-plan/oncall",
            True,
        ),
        ("AlertActionArns", "arn:aws:sns:eu-west-1:123456789012:chat,", False),
        ("AlertActionArns", "pager@example.com", False),
    ],
)
def test_alert_destinations_are_checked_at_deploy_time(
    template: dict[str, Any], parameter: str, value: str, accepted: bool
) -> None:
    # CloudFormation matches AllowedPattern against the whole value.
    pattern = template["Parameters"][parameter]["AllowedPattern"]
    assert (re.fullmatch(pattern, value) is not None) is accepted


# --------------------------------------------------------------------------------------------------
# Every silent-loss mode is alarmed
# --------------------------------------------------------------------------------------------------
API = {"Ref": "WebhookApi"}


def test_webhook_refusals_errors_and_throttling_are_alarmed(template: dict[str, Any]) -> None:
    # A rotated token answers 403 from a handler that succeeds: only the API's 4xx rate shows it.
    rate = alarm_on(template, "AWS/ApiGateway", "4xx", API)
    assert {m["MetricName"] for m in watched(rate)} == {"4xx", "Count"}
    assert alarm_on(template, "AWS/ApiGateway", "5xx", API)["Threshold"] == 0
    # HTTP APIs have no 429 metric: the access log's 429s are counted by a metric filter.
    [metric_filter] = resources_of_type(template, "AWS::Logs::MetricFilter").values()
    assert metric_filter["Properties"]["LogGroupName"] == {"Ref": "WebhookApiAccessLogGroup"}
    assert '"429"' in metric_filter["Properties"]["FilterPattern"]
    [transformation] = metric_filter["Properties"]["MetricTransformations"]
    assert alarm_on(template, transformation["MetricNamespace"], transformation["MetricName"])["Threshold"] == 0


def test_a_stalled_fetcher_is_alarmed_long_before_the_queue_drops_its_jobs(template: dict[str, Any]) -> None:
    queue = template["Resources"]["FetchQueue"]["Properties"]
    age = alarm_on(template, "AWS/SQS", "ApproximateAgeOfOldestMessage", {"Fn::GetAtt": ["FetchQueue", "QueueName"]})
    assert age["Threshold"] <= queue["MessageRetentionPeriod"] / 10
    # ... but after a job that keeps failing has reached the DLQ (which has its own alarm).
    redeliveries = queue["VisibilityTimeout"] * queue["RedrivePolicy"]["maxReceiveCount"]
    assert age["Threshold"] > redeliveries


def test_the_dead_letter_queue_is_alarmed_when_it_fills_and_before_it_expires(template: dict[str, Any]) -> None:
    dlq = {"Fn::GetAtt": ["FetchDeadLetterQueue", "QueueName"]}
    assert alarm_on(template, "AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq)["Threshold"] == 0
    age = alarm_on(template, "AWS/SQS", "ApproximateAgeOfOldestMessage", dlq)
    assert age["Threshold"] <= template["Resources"]["FetchDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"] / 2


def test_the_fetcher_is_alarmed_on_throttles_its_timeout_and_its_concurrency_cap(template: dict[str, Any]) -> None:
    fetcher = {"Ref": "FetcherFunction"}
    assert alarm_on(template, "AWS/Lambda", "Throttles", fetcher)["Threshold"] == 0
    duration = alarm_on(template, "AWS/Lambda", "Duration", fetcher)
    assert duration["Threshold"] == 0.8 * function_property(template, "FetcherFunction", "Timeout") * 1000
    [jobs] = template["Resources"]["FetcherFunction"]["Properties"]["Events"].values()
    concurrency = alarm_on(template, "AWS/Lambda", "ConcurrentExecutions", fetcher)
    assert concurrency["Threshold"] == jobs["Properties"]["ScalingConfig"]["MaximumConcurrency"]
    assert concurrency["Statistic"] == "Maximum"


@pytest.mark.parametrize("function", ["PbxSessionKeeperFunction", "ReconcilerFunction"])
def test_a_scheduled_function_that_stops_running_is_alarmed(template: dict[str, Any], function: str) -> None:
    alarm = alarm_on(template, "AWS/Lambda", "Invocations", {"Ref": function})
    # No data at all is the symptom: missing data must count as breaching.
    assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["TreatMissingData"]) == (
        "LessThanThreshold",
        1,
        "breaching",
    )
    schedules = [
        e["Properties"]["Schedule"]
        for e in template["Resources"][function]["Properties"]["Events"].values()
        if e["Type"] == "Schedule"
    ]
    assert schedules == ["rate(5 minutes)"]
    assert alarm["Period"] * alarm["EvaluationPeriods"] == 3 * 300  # three missed runs


def test_retry_workflows_that_fail_time_out_or_are_aborted_are_alarmed(template: dict[str, Any]) -> None:
    machine = {"Ref": "RetryStateMachine"}
    assert alarm_on(template, "AWS/States", "ExecutionsFailed", machine)["Threshold"] == 0
    stopped = alarm_on(template, "AWS/States", "ExecutionsTimedOut", machine)
    assert stopped is alarm_on(template, "AWS/States", "ExecutionsAborted", machine)


def test_every_function_failure_and_reconciliation_finding_is_alarmed(template: dict[str, Any]) -> None:
    for function in resources_of_type(template, "AWS::Serverless::Function"):
        alarm_on(template, "AWS/Lambda", "Errors", {"Ref": function})
    for metric in ("LostPushes", "ReconciliationFailures"):
        alarm_on(template, "callvault", metric)


# --------------------------------------------------------------------------------------------------
# Every alarm has a runbook
# --------------------------------------------------------------------------------------------------
def runbooks() -> dict[str, str]:
    """Runbook sections of docs/operations.md by the alarm logical id in their heading."""
    sections = re.split(r"^### ", OPERATIONS.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]
    found = {}
    for section in sections:
        heading = re.match(r"`(\w+Alarm)`", section)
        if heading:
            found[heading.group(1)] = section.split("\n## ", 1)[0]
    return found


def test_every_alarm_has_a_runbook_section_and_every_section_an_alarm(template: dict[str, Any]) -> None:
    assert sorted(runbooks()) == sorted(alarms(template))


@pytest.mark.parametrize("alarm", sorted(runbooks()))
def test_a_runbook_says_what_it_means_three_first_checks_and_the_commands(alarm: str) -> None:
    section = runbooks()[alarm]
    assert "**What it means**" in section
    checks = re.search(r"\*\*First three checks\*\*\n1\. .+\n(?:.+\n)*?2\. .+\n(?:.+\n)*?3\. ", section)
    assert checks, f"{alarm}: no numbered first three checks"
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert commands and re.search(r"^(callvault|aws) ", commands[0], flags=re.MULTILINE), alarm


def test_every_alarm_description_points_at_its_runbook(template: dict[str, Any]) -> None:
    for name, alarm in alarms(template).items():
        assert alarm["AlarmDescription"].endswith(f"Runbook: docs/operations.md, {name}."), name


# --------------------------------------------------------------------------------------------------
# What operators see
# --------------------------------------------------------------------------------------------------
def dashboard_body(template: dict[str, Any]) -> dict[str, Any]:
    """The dashboard as deployed with every option on (the example consumer's alarms included)."""
    [dashboard] = resources_of_type(template, "AWS::CloudWatch::Dashboard").values()
    text, variables = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    for name, value in variables.items():
        _, deployed, _ = value["Fn::If"]
        text = text.replace(f"${{{name}}}", deployed["Fn::Sub"])
    # Every ${...} becomes a value CloudFormation would put there; the rest must be JSON.
    return json.loads(re.sub(r"\$\{([^}]+)\}", lambda m: f"resolved-{m.group(1)}", text))


def test_the_dashboard_shows_ingest_archiving_queues_failures_and_every_alarm(template: dict[str, Any]) -> None:
    body = dashboard_body(template)
    [alarm_widget] = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert sorted(alarm_widget["properties"]["alarms"]) == sorted(f"resolved-{name}.Arn" for name in alarms(template))
    shown = json.dumps([w["properties"].get("metrics") for w in body["widgets"] if w["type"] == "metric"])
    for metric in (
        '"4xx"',
        '"5xx"',
        "WebhookThrottledRequests",
        "RecordingsArchived",
        "BytesArchived",
        "ArchiveDelay",
        "ApproximateAgeOfOldestMessage",
        "RecordingFailures",
        "FetchRetries",
        "LostPushes",
    ):
        assert metric in shown, metric


def published_metrics() -> set[str]:
    """Custom metric names the core publishes (``"Name": (MetricUnit.…``)."""
    core = ROOT / "layers" / "callvault" / "callvault"
    return {
        name
        for path in core.rglob("*.py")
        for name in re.findall(r'"(\w+)": \(MetricUnit\.', path.read_text(encoding="utf-8"))
    }


def test_custom_metrics_alarmed_or_charted_are_ones_something_publishes(template: dict[str, Any]) -> None:
    filtered = {
        t["MetricName"]
        for f in resources_of_type(template, "AWS::Logs::MetricFilter").values()
        for t in f["Properties"]["MetricTransformations"]
    }
    alarmed = {m["MetricName"] for a in alarms(template).values() for m in watched(a) if m["Namespace"] == "callvault"}
    charted = set(re.findall(r'MetricName=\\"(\w+)\\"', json.dumps(dashboard_body(template))))
    charted |= {
        row[1]
        for w in dashboard_body(template)["widgets"]
        for row in w["properties"].get("metrics", [])
        if isinstance(row[0], str) and row[0] == "callvault"
    }
    assert alarmed | charted <= published_metrics() | filtered


def test_the_access_log_names_the_source_by_path_and_never_the_token(template: dict[str, Any]) -> None:
    log_format = template["Resources"]["WebhookApi"]["Properties"]["AccessLogSettings"]["Format"]
    assert json.loads(log_format)["path"] == "$context.path"
    variables = set(re.findall(r"\$context\.[\w.]+", log_format))
    # Nothing that carries the query string (token=...), headers or anything the caller wrote.
    assert variables == {
        "$context.requestId",
        "$context.identity.sourceIp",
        "$context.requestTime",
        "$context.httpMethod",
        "$context.routeKey",
        "$context.path",
        "$context.status",
        "$context.responseLength",
        "$context.integrationLatency",
        "$context.integrationErrorMessage",
    }
