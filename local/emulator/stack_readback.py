"""What the emulator needs to run the stack, read from the SAM template and the created stack.

Functions (deployed configuration, source and layer directories), HTTP routes, SQS queue
mappings and schedules are derived here, not kept in a second list; the trigger modules
(:mod:`~local.emulator.http_api`, :mod:`~local.emulator.sqs_poller`,
:mod:`~local.emulator.scheduler`) know nothing of the template. Also read back from moto here:
what still keeps the stack's queues and state machines busy.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from local.emulator.errors import LocalStackError
from local.emulator.function_runner import FunctionSpec
from local.emulator.http_api import HttpRoute
from local.emulator.moto_plan import MotoPlan
from local.emulator.packaging import Artifacts, local_artifact_path
from local.emulator.scheduler import ScheduleSpec, parse_rate_seconds
from local.emulator.sqs_poller import QueueMapping
from local.emulator.template import function_globals, resources_of_type

LOG = logging.getLogger("local.emulator.stack_readback")


def http_routes(sam_template: Mapping[str, Any]) -> list[HttpRoute]:
    """HttpApi events of every function, as routes (API Gateway v2 does not exist in moto)."""
    routes: list[HttpRoute] = []
    for function_id, props in resources_of_type(sam_template, "AWS::Serverless::Function"):
        for event_name, event in (props.get("Events") or {}).items():
            if event.get("Type") != "HttpApi":
                continue
            event_props = event.get("Properties") or {}
            version = str(event_props.get("PayloadFormatVersion", "2.0"))
            if version != "2.0":
                raise LocalStackError(f"{function_id}.{event_name}: only payload format 2.0 is emulated")
            method = str(event_props.get("Method", "ANY")).upper()
            path = str(event_props.get("Path", "$default"))
            routes.append(HttpRoute(method=method, path=path, function_id=function_id))
    return routes


def schedules(sam_template: Mapping[str, Any]) -> list[ScheduleSpec]:
    """Schedule/ScheduleV2 events of every function, enabled ones only."""
    specs: list[ScheduleSpec] = []
    for function_id, props in resources_of_type(sam_template, "AWS::Serverless::Function"):
        for event_name, event in (props.get("Events") or {}).items():
            kind = event.get("Type")
            if kind not in ("Schedule", "ScheduleV2"):
                continue
            event_props = event.get("Properties") or {}
            expression = event_props.get("Schedule") or event_props.get("ScheduleExpression")
            if not _schedule_enabled(event_props):
                LOG.info("schedule %s.%s is disabled in the template; no timer", function_id, event_name)
                continue
            if not isinstance(expression, str):
                raise LocalStackError(f"{function_id}.{event_name}: schedule expression must be a literal string")
            payload = event_props.get("Input")
            specs.append(
                ScheduleSpec(
                    function_id=function_id,
                    event_id=f"{function_id}{event_name}",
                    kind=kind,
                    expression=expression,
                    interval_seconds=parse_rate_seconds(expression),
                    input=payload if isinstance(payload, str) else None,
                )
            )
    return specs


def _schedule_enabled(event_props: Mapping[str, Any]) -> bool:
    """Whether a Schedule/ScheduleV2 event is enabled (only literal values can be judged)."""
    if event_props.get("Enabled") is False:
        return False
    return event_props.get("State", "ENABLED") != "DISABLED"


def function_sources(sam_template: Mapping[str, Any], template_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Source directories of functions (by logical id) and of layers (by their S3 key later)."""
    code_default = function_globals(sam_template).get("CodeUri")
    functions = {
        logical_id: local_artifact_path(template_dir, props.get("CodeUri", code_default), logical_id, "CodeUri")
        for logical_id, props in resources_of_type(sam_template, "AWS::Serverless::Function")
    }
    layers = {
        logical_id: local_artifact_path(template_dir, props.get("ContentUri"), logical_id, "ContentUri")
        for logical_id, props in resources_of_type(sam_template, "AWS::Serverless::LayerVersion")
    }
    return functions, layers


def layer_import_dir(content_dir: Path) -> Path:
    """The directory Lambda would put on sys.path for a layer: ``python/`` if the layer has one."""
    python_dir = content_dir / "python"
    return python_dir if python_dir.is_dir() else content_dir


def physical_ids(cfn: Any, stack_name: str) -> dict[str, tuple[str, str]]:
    """Logical id → (resource type, physical id); moto lists skipped resources without ids."""
    resources = cfn.describe_stack_resources(StackName=stack_name)["StackResources"]
    ids: dict[str, tuple[str, str]] = {}
    for resource in resources:
        logical_id = resource.get("LogicalResourceId")
        if logical_id:
            ids[logical_id] = (resource.get("ResourceType", ""), resource.get("PhysicalResourceId", ""))
    return ids


def function_specs(
    sam_template: dict[str, Any],
    template_dir: Path,
    plan: MotoPlan,
    artifacts: Artifacts,
    physical: Mapping[str, tuple[str, str]],
    lambda_client: Any,
) -> dict[str, FunctionSpec]:
    """Build each function's spec from its deployed configuration and its source directory."""
    code_dirs, _ = function_sources(sam_template, template_dir)
    specs: dict[str, FunctionSpec] = {}
    for logical_id, code_dir in code_dirs.items():
        if logical_id not in physical:
            continue  # a Condition kept it out of the stack
        config = lambda_client.get_function_configuration(FunctionName=physical[logical_id][1])
        specs[logical_id] = FunctionSpec(
            logical_id=logical_id,
            name=config["FunctionName"],
            arn=config["FunctionArn"],
            code_dir=code_dir,
            handler=config["Handler"],
            timeout=int(config.get("Timeout", 3)),
            memory_mb=int(config.get("MemorySize", 128)),
            layer_dirs=function_layer_dirs(logical_id, plan, artifacts),
            environment=_string_values((config.get("Environment") or {}).get("Variables") or {}),
        )
    return specs


def function_layer_dirs(function_id: str, plan: MotoPlan, artifacts: Artifacts) -> tuple[Path, ...]:
    """Import directories of the layers a function uses, from the translated template.

    moto's CloudFormation drops a function's Layers (and gives layer versions no physical
    id), so the ``Ref``s in the translated function are followed to each layer's S3 key.
    """
    layer_keys: dict[str, str] = {
        logical_id: str((props.get("Content") or {}).get("S3Key"))
        for logical_id, props in resources_of_type(plan.body, "AWS::Lambda::LayerVersion")
    }
    resource = plan.body["Resources"].get(function_id) or {}
    dirs: list[Path] = []
    for layer in (resource.get("Properties") or {}).get("Layers") or []:
        key = layer_keys.get(str(layer.get("Ref"))) if isinstance(layer, dict) else None
        if key is not None and key in artifacts.sources:
            dirs.append(layer_import_dir(artifacts.sources[key]))
        else:
            LOG.warning("%s: layer %r is not built from this template; not importable locally", function_id, layer)
    return tuple(dirs)


def check_http_api_stages(sam_template: Mapping[str, Any]) -> None:
    """Warn when an HttpApi has a named stage: routes are served here without its prefix."""
    for logical_id, props in resources_of_type(sam_template, "AWS::Serverless::HttpApi"):
        stage = props.get("StageName", "$default")
        if stage != "$default":
            LOG.warning("%s has StageName %r; local routes are served without a stage prefix", logical_id, stage)


def queue_mappings(
    plan: MotoPlan, outputs: Mapping[str, str], physical: Mapping[str, tuple[str, str]], sqs: Any
) -> list[QueueMapping]:
    """Turn the removed event source mappings into SQS poller definitions."""
    by_name = {pid: lid for lid, (rtype, pid) in physical.items() if rtype == "AWS::Lambda::Function"}
    mappings: list[QueueMapping] = []
    for esm_id, props in plan.event_source_mappings.items():
        source_arn = outputs.get(props["_SourceArnOutput"], "")
        function_id = by_name.get(outputs.get(props["_FunctionOutput"], ""))
        if not source_arn or function_id is None:
            continue  # a Condition kept it out of the stack
        if not source_arn.startswith("arn:aws:sqs:"):
            LOG.warning("%s: only SQS event sources are emulated, not %s", esm_id, source_arn)
            continue
        if props.get("Enabled") is False:
            LOG.info("%s is disabled in the template; no poller", esm_id)
            continue
        if props.get("FilterCriteria"):
            LOG.warning("%s: FilterCriteria are not applied locally", esm_id)
        _, _, _, _, account, queue_name = source_arn.split(":", 5)
        queue_url = sqs.get_queue_url(QueueName=queue_name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        mappings.append(
            QueueMapping(
                mapping_id=esm_id,
                function_id=function_id,
                queue_arn=source_arn,
                queue_url=queue_url,
                batch_size=int(props.get("BatchSize", 10)),
                batching_window_seconds=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                report_batch_item_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
            )
        )
    return mappings


def schedules_with_arns(
    sam_template: Mapping[str, Any], physical: Mapping[str, tuple[str, str]], region: str, account: str
) -> list[ScheduleSpec]:
    """Schedules from the template, with the rule/schedule ARN their events name."""
    specs: list[ScheduleSpec] = []
    for spec in schedules(sam_template):
        if spec.kind == "Schedule":
            # moto names the rule itself; fall back to the logical id if it was skipped.
            name = physical.get(spec.event_id, ("", spec.event_id))[1] or spec.event_id
            arn = f"arn:aws:events:{region}:{account}:rule/{name}"
        else:
            # moto's CloudFormation skips AWS::Scheduler::Schedule: the name is the logical id.
            arn = f"arn:aws:scheduler:{region}:{account}:schedule/default/{spec.event_id}"
        specs.append(dataclasses.replace(spec, resource_arn=arn))
    return specs


def busy_queues(sqs: Any, queue_urls: Iterable[str]) -> list[str]:
    """Polled queues that still hold visible, in-flight or delayed messages."""
    reasons: list[str] = []
    for queue_url in sorted(set(queue_urls)):
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        count = sum(int(value) for value in attributes.values())
        if count:
            reasons.append(f"{count} message(s) in {queue_url.rsplit('/', 1)[-1]}")
    return reasons


def running_executions(sfn: Any) -> list[str]:
    """State machines of this stack with RUNNING executions."""
    reasons: list[str] = []
    for machine in sfn.list_state_machines()["stateMachines"]:
        running = sfn.list_executions(stateMachineArn=machine["stateMachineArn"], statusFilter="RUNNING")
        if running["executions"]:
            reasons.append(f"{len(running['executions'])} execution(s) of {machine['name']} running")
    return reasons


def _string_values(variables: Mapping[str, Any]) -> dict[str, str]:
    """Environment values as Lambda sees them: strings (moto keeps a Number parameter an int)."""
    return {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in variables.items()}


def localise(value: str, http_api_ids: set[str], base_url: str) -> str:
    """Point an HTTP API endpoint URL at the local HTTP server: moto creates no API, so it leaves
    ``https://${Api}.execute-api...`` unresolved."""

    def replace(match: re.Match[str]) -> str:
        return base_url if match.group(1) in http_api_ids else match.group(0)

    return re.sub(r"https://\$\{(\w+)\}\.execute-api\.[A-Za-z0-9.${}:-]+", replace, value)
