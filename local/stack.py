"""Create the SAM application from ``template.yaml`` in moto and run its handlers in-process.

The template is the single source of truth: every resource comes from translating it the way
``sam package`` + ``sam deploy`` would, and everything the runtime needs (function code, handlers,
environment, HTTP routes, queue pollers, timers) is read back from the template and the created
stack rather than from a second hand-kept list.

moto covers the AWS APIs but not the compute glue: API Gateway v2 is skipped by its
CloudFormation, Lambda cannot be invoked without Docker, event source mappings would swallow
messages, and state machines ignore ``DefinitionS3Location``/``DefinitionSubstitutions``.
This module fills exactly those gaps; :mod:`local.runtime` drives the handlers.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import sys
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
import requests
import yaml
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from local.lambda_api import LambdaApiServer
from local.runtime import (
    DEFAULT_ACCOUNT,
    FunctionRunner,
    FunctionSpec,
    HttpApiServer,
    HttpRoute,
    QueueMapping,
    QueuePoller,
    Scheduler,
    ScheduleSpec,
    merge_environments,
    parse_rate_seconds,
)

LOG = logging.getLogger("local.stack")

DEFAULT_REGION = "us-east-1"
DEFAULT_STACK_NAME = "callvault-local"
ARTIFACT_BUCKET = "callvault-local-artifacts"
# Output keys this module adds to the template to let moto resolve expressions for it.
HIDDEN_OUTPUT_PREFIX = "LocalRuntimeExpr"
# Stack outputs copied into the state file under short names (the names demo/tests use).
STATE_OUTPUTS = {
    "bucket": "RecordingsBucketName",
    "table": "LedgerTableName",
    "queue_url": "FetchQueueUrl",
    "dlq_url": "FetchDeadLetterQueueUrl",
    "state_machine_arn": "RetryStateMachineArn",
    "alert_topic_arn": "AlertTopicArn",
}
SOURCES_PREFIX_VARIABLE = "SOURCES_SECRET_PREFIX"
WEBHOOK_BASE_URL_VARIABLE = "WEBHOOK_BASE_URL"
SourcesPublisher = Callable[[Path, Any, str], Any]


class LocalStackError(Exception):
    """The local stack cannot start; the message is one line fit for a CLI user."""


# --------------------------------------------------------------------------------------------
# Reading template.yaml
# --------------------------------------------------------------------------------------------


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML loader for CloudFormation: short intrinsic tags, and no timestamp conversion."""


# CloudFormation keeps "2010-09-09" a string; plain YAML would turn an unquoted one into a date.
_CloudFormationLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    """Turn ``!Name value`` into the long form ``{"Fn::Name": value}`` (``Ref``/``Condition`` bare)."""
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        # The short form "Resource.Attribute" may itself contain dots after the first one.
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{suffix}": value}


_CloudFormationLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: Path) -> dict[str, Any]:
    """Parse a SAM/CloudFormation template (YAML or JSON) into plain long-form dicts."""
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_CloudFormationLoader)  # noqa: S506
    except FileNotFoundError as error:
        raise LocalStackError(f"template not found: {path}") from error
    except (OSError, yaml.YAMLError) as error:
        raise LocalStackError(f"template {path} is not valid YAML: {_one_line(error)}") from error
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise LocalStackError(f"template {path} has no Resources section")
    return document


def _one_line(error: BaseException) -> str:
    """Squeeze an exception message onto one line for CLI output."""
    return " ".join(str(error).split())


# --------------------------------------------------------------------------------------------
# Packaging (what `sam package` does) and translation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifacts:
    """Where each uploaded artifact came from, keyed by its S3 key in the artifact bucket."""

    bucket: str
    sources: Mapping[str, Path]


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(logical_id, properties)`` of every resource of one type."""
    for logical_id, resource in template.get("Resources", {}).items():
        if isinstance(resource, dict) and resource.get("Type") == resource_type:
            yield logical_id, resource.setdefault("Properties", {})


def _function_globals(template: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``Globals.Function`` section, which may supply CodeUri/Handler/Layers."""
    return (template.get("Globals") or {}).get("Function") or {}


def local_artifact_path(template_dir: Path, uri: Any, owner: str, prop: str) -> Path:
    """Resolve a local CodeUri/ContentUri/DefinitionUri; anything else cannot be run locally."""
    if not isinstance(uri, str) or uri.startswith("s3://"):
        raise LocalStackError(f"{owner}.{prop} must be a local path for the local runtime, got {uri!r}")
    path = (template_dir / uri).resolve()
    if not path.exists():
        raise LocalStackError(f"{owner}.{prop} points to {path}, which does not exist")
    return path


def zip_directory(directory: Path) -> bytes:
    """Zip a code directory reproducibly (sorted, fixed timestamps, no bytecode caches)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def package_template(template: dict[str, Any], template_dir: Path, s3: Any, bucket: str) -> Artifacts:
    """Upload function/layer code and state machine definitions; rewrite their URIs to ``s3://``.

    Mutates ``template`` in place, like ``sam package`` writing the packaged template.
    """
    sources: dict[str, Path] = {}

    def upload(logical_id: str, path: Path, body: bytes, suffix: str) -> str:
        key = f"{logical_id}/{hashlib.sha256(body).hexdigest()[:16]}{suffix}"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        sources[key] = path
        return f"s3://{bucket}/{key}"

    code_default = _function_globals(template).get("CodeUri")
    for logical_id, props in resources_of_type(template, "AWS::Serverless::Function"):
        if "InlineCode" in props:
            raise LocalStackError(f"{logical_id} uses InlineCode, which the local runtime cannot import")
        path = local_artifact_path(template_dir, props.get("CodeUri", code_default), logical_id, "CodeUri")
        props["CodeUri"] = upload(logical_id, path, zip_directory(path), ".zip")
    for logical_id, props in resources_of_type(template, "AWS::Serverless::LayerVersion"):
        path = local_artifact_path(template_dir, props.get("ContentUri"), logical_id, "ContentUri")
        props["ContentUri"] = upload(logical_id, path, zip_directory(path), ".zip")
    for logical_id, props in resources_of_type(template, "AWS::Serverless::StateMachine"):
        if "DefinitionUri" in props:
            path = local_artifact_path(template_dir, props["DefinitionUri"], logical_id, "DefinitionUri")
            props["DefinitionUri"] = upload(logical_id, path, path.read_bytes(), path.suffix)
    return Artifacts(bucket=bucket, sources=sources)


class _MotoManagedPolicies:
    """Managed policy name → ARN map for the translator, from moto's copy of the AWS list."""

    def load(self) -> dict[str, str]:
        """Return every AWS managed policy moto knows, as the translator's loader must."""
        from moto.iam.aws_managed_policies import aws_managed_policies_data

        policies = json.loads(aws_managed_policies_data)
        return {name: f"arn:aws:iam::aws:policy{data['Path']}{name}" for name, data in policies.items()}


def translate_template(template: dict[str, Any], parameters: Mapping[str, str]) -> dict[str, Any]:
    """Translate a packaged SAM template into plain CloudFormation, offline."""
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.transform import transform

    try:
        return transform(copy.deepcopy(template), dict(parameters), _MotoManagedPolicies())
    except InvalidDocumentException as error:
        causes = "; ".join(_one_line(cause) for cause in error.causes)
        raise LocalStackError(f"template does not translate: {causes}") from error


# --------------------------------------------------------------------------------------------
# Adapting the translated template to what moto can create
# --------------------------------------------------------------------------------------------


@dataclass
class MotoPlan:
    """The CloudFormation body for moto plus everything set aside for the runtime."""

    body: dict[str, Any]
    event_source_mappings: dict[str, dict[str, Any]]
    # Output key → expression, for values moto must resolve (ARNs, queue URLs, substitutions).
    hidden_outputs: dict[str, Any]
    # State machine logical id → {placeholder: output key or literal value}.
    substitutions: dict[str, dict[str, str]]


class _HiddenOutputs:
    """Collects expressions to resolve through extra stack outputs."""

    def __init__(self) -> None:
        self.outputs: dict[str, Any] = {}

    def add(self, expression: Any, condition: str | None = None) -> str:
        """Register an expression; return the output key under which its value will appear."""
        key = f"{HIDDEN_OUTPUT_PREFIX}{len(self.outputs)}"
        output: dict[str, Any] = {"Value": expression}
        if condition:
            output["Condition"] = condition
        self.outputs[key] = output
        return key


def plan_for_moto(translated: dict[str, Any], artifacts: Artifacts) -> MotoPlan:
    """Remove event source mappings, inline state machine definitions, add resolver outputs."""
    body = copy.deepcopy(translated)
    hidden = _HiddenOutputs()
    mappings = _take_event_source_mappings(body, hidden)
    substitutions = _inline_state_machines(body, artifacts, hidden)
    body.setdefault("Outputs", {}).update(hidden.outputs)
    return MotoPlan(body, mappings, hidden.outputs, substitutions)


def _take_event_source_mappings(body: dict[str, Any], hidden: _HiddenOutputs) -> dict[str, dict[str, Any]]:
    """Pull every event source mapping out of the template (moto would swallow the messages).

    The mapping's source ARN is kept as a hidden output so moto resolves it for the poller.
    """
    resources = body["Resources"]
    mappings: dict[str, dict[str, Any]] = {}
    for logical_id in [lid for lid, res in resources.items() if res.get("Type") == "AWS::Lambda::EventSourceMapping"]:
        resource = resources.pop(logical_id)
        props = dict(resource.get("Properties", {}))
        props["_SourceArnOutput"] = hidden.add(props.get("EventSourceArn"), resource.get("Condition"))
        props["_FunctionOutput"] = hidden.add(props.get("FunctionName"), resource.get("Condition"))
        mappings[logical_id] = props
    for resource in resources.values():
        _drop_dependencies(resource, set(mappings))
    return mappings


def _drop_dependencies(resource: dict[str, Any], removed: set[str]) -> None:
    """Remove DependsOn entries that point at resources taken out of the template."""
    depends = resource.get("DependsOn")
    if isinstance(depends, str) and depends in removed:
        del resource["DependsOn"]
    elif isinstance(depends, list):
        resource["DependsOn"] = [name for name in depends if name not in removed]


def _inline_state_machines(
    body: dict[str, Any], artifacts: Artifacts, hidden: _HiddenOutputs
) -> dict[str, dict[str, str]]:
    """Give moto a DefinitionString it reads; defer DefinitionSubstitutions to after creation.

    moto's StateMachine reads only ``DefinitionString``. Substitution values (queue URLs, table
    names...) exist only once the stack does, so they become hidden outputs; the definition is
    substituted and updated right after creation (see :func:`apply_definition_substitutions`).
    """
    substitutions: dict[str, dict[str, str]] = {}
    for logical_id, props in resources_of_type(body, "AWS::StepFunctions::StateMachine"):
        location = props.pop("DefinitionS3Location", None)
        if location is not None:
            props["DefinitionString"] = _definition_text(artifacts.sources[location["Key"]])
        elif "Definition" in props:
            props["DefinitionString"] = json.dumps(props.pop("Definition"))
        values = props.pop("DefinitionSubstitutions", None) or {}
        condition = body["Resources"][logical_id].get("Condition")
        substitutions[logical_id] = {
            name: value if isinstance(value, str) else hidden.add(value, condition) for name, value in values.items()
        }
    return substitutions


def _definition_text(path: Path) -> str:
    """Read an ASL file as JSON text (Step Functions also accepts YAML definitions in S3)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        return json.dumps(yaml.safe_load(text))
    return text


def substitute_definition(definition: str, values: Mapping[str, str]) -> str:
    """Apply DefinitionSubstitutions: replace each ``${Name}`` that has a value, leave the rest."""

    def replace(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return re.sub(r"\$\{([A-Za-z0-9_.:-]+)\}", replace, definition)


# --------------------------------------------------------------------------------------------
# What the runtime needs, read from the SAM template
# --------------------------------------------------------------------------------------------


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
    code_default = _function_globals(sam_template).get("CodeUri")
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


# --------------------------------------------------------------------------------------------
# moto server
# --------------------------------------------------------------------------------------------


class MotoAws:
    """moto in server mode on a loopback port, as the AWS every boto3 client in-process talks to."""

    def __init__(self, port: int = 0, region: str = DEFAULT_REGION) -> None:
        self._requested_port = port
        self.region = region
        self._server: Any = None
        self.endpoint_url = ""

    def start(self) -> None:
        """Start the server thread and make Step Functions actually execute."""
        from moto.server import ThreadedMotoServer

        # Port 0 lets the OS pick a free port atomically; the real one is read back.
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self._requested_port, verbose=False)
        try:
            self._server.start()
        except OSError as error:
            raise LocalStackError(f"cannot start moto on port {self._requested_port}: {error}") from error
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        _quiet_moto()
        _make_dynamodb_item_operations_atomic()

    @property
    def port(self) -> int:
        """The port moto listens on."""
        return int(self.endpoint_url.rsplit(":", 1)[1])

    def environment(self) -> dict[str, str]:
        """Variables that point boto3 (and moto's own Step Functions interpreter) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",  # moto accepts any credentials
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            # The ASL interpreter calls sqs/dynamodb/sns through localhost:$MOTO_PORT.
            "MOTO_PORT": str(self.port),
        }

    def execute_state_machines(self, enabled: bool) -> None:
        """Switch moto's Step Functions between recording executions and interpreting them.

        The switch is process-global moto config: it also selects which backend the API
        serves (see :meth:`LocalStack._install_state_machines`).
        """
        reply = requests.post(
            f"{self.endpoint_url}/moto-api/config",
            json={"stepfunctions": {"execute_state_machine": enabled}},
            timeout=10,
        )
        reply.raise_for_status()

    def stop(self) -> None:
        """Forget every resource (backends are process-global) and stop the server."""
        if self._server is None:
            return
        try:
            requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=10)
            self.execute_state_machines(False)  # reset keeps config; leave moto's default behind
        except requests.RequestException:
            LOG.warning("moto reset failed; its in-memory state may leak into a later stack")
        self._server.stop()
        self._server = None


_DYNAMODB_ITEM_LOCK = threading.RLock()


def _make_dynamodb_item_operations_atomic() -> None:
    """Serialise moto's DynamoDB item operations, as DynamoDB makes each write atomic.

    moto serves requests in threads, evaluates a ConditionExpression and then writes without a
    lock (two concurrent conditional writes can both succeed: the ledger's claim relies on that
    never happening), and applies an update in place, action by action (a concurrent read can
    see half an item). Patched once per process, idempotently.
    """
    from moto.dynamodb.models import DynamoDBBackend

    operations = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
    for name in (*operations, "get_item", "query", "scan", "batch_get_item"):
        method = getattr(DynamoDBBackend, name)
        if getattr(method, "_callvault_atomic", False):
            continue

        def atomic(*args: Any, __method: Any = method, **kwargs: Any) -> Any:
            with _DYNAMODB_ITEM_LOCK:
                return __method(*args, **kwargs)

        atomic._callvault_atomic = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, atomic)


class _DropUnsupportedResourceNotes(logging.Filter):
    """Drops moto's per-pass "No Moto CloudFormation support" lines (summarised once instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but those notes."""
        return not str(record.msg).startswith("No Moto CloudFormation support")


def _quiet_moto() -> None:
    """Silence moto's per-request and per-resource chatter; :func:`unsupported_types` reports once."""
    # werkzeug logs every moto request at INFO, which drowns the handlers' own logs.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto_logger = logging.getLogger("moto")
    if not any(isinstance(f, _DropUnsupportedResourceNotes) for f in moto_logger.filters):
        moto_logger.addFilter(_DropUnsupportedResourceNotes())
    warnings.filterwarnings("ignore", message=r"Tried to parse .* not supported by moto", category=UserWarning)


def unsupported_types(body: Mapping[str, Any]) -> list[str]:
    """Resource types of a template that moto's CloudFormation skips (created as nothing)."""
    from moto.cloudformation.parsing import NULL_MODELS, get_model_map

    supported = set(get_model_map()) | set(NULL_MODELS)
    types = {res.get("Type", "") for res in body.get("Resources", {}).values() if isinstance(res, dict)}
    return sorted(t for t in types if t not in supported and not t.startswith("Custom::"))


# --------------------------------------------------------------------------------------------
# The whole local stack
# --------------------------------------------------------------------------------------------


class LocalStack:
    """The SAM application running on this machine: moto as AWS, real handlers in-process.

    Usage::

        with LocalStack(template="template.yaml", sources_file="local/sources.yaml") as stack:
            requests.post(stack.state["webhook_url_template"].format(source_id="pbx-1"), ...)
            stack.wait_idle(30)

    The process environment is shared with the handlers (that is how they find moto), so only
    one LocalStack may run per process; ``stop`` restores the variables it changed.
    """

    def __init__(
        self,
        template: str | Path = "template.yaml",
        *,
        sources_file: str | Path | None = None,
        state_file: str | Path | None = None,
        parameters: Mapping[str, str] | None = None,
        stage: str = "dev",
        stack_name: str = DEFAULT_STACK_NAME,
        region: str = DEFAULT_REGION,
        http_port: int = 0,
        aws_port: int = 0,
        schedule_interval: float | None = None,
        run_schedules: bool = True,
        concurrency: int = 1,
        redelivery_delay: int | None = None,
        env_overrides: Mapping[str, str] | None = None,
        publish_sources: SourcesPublisher | None = None,
    ) -> None:
        """Configure the stack; nothing starts before :meth:`start` (or ``with``).

        ``parameters`` override template parameters (``Stage`` defaults to ``stage``).
        ``schedule_interval`` replaces every schedule's rate (seconds); ``run_schedules=False``
        disables timers (``run_schedules_now`` still works). ``redelivery_delay`` shortens the
        visibility timeout of failed SQS messages (None keeps the queue's, as AWS does).
        ``concurrency`` is the number of execution environments per function (each imports
        the handler module separately) and of pollers per queue.
        ``publish_sources`` defaults to ``callvault.sources.publish_sources_file``.
        """
        if schedule_interval is not None and schedule_interval <= 0:
            raise LocalStackError(f"schedule interval must be positive, got {schedule_interval}")
        self.template_path = Path(template).resolve()
        self.sources_file = Path(sources_file).resolve() if sources_file else None
        self.state_file = Path(state_file).resolve() if state_file else None
        self.parameters = {"Stage": stage, **(parameters or {})}
        self.stack_name = stack_name
        self.region = region
        self._http_port = http_port
        self._schedule_interval = schedule_interval
        self._run_schedules = run_schedules
        self._concurrency = max(1, concurrency)
        self._redelivery_delay = redelivery_delay
        self._env_overrides = dict(env_overrides or {})
        self._publish_sources = publish_sources
        self.aws = MotoAws(aws_port, region)
        self.runner: FunctionRunner | None = None
        self.http: HttpApiServer | None = None
        self.lambda_api: LambdaApiServer | None = None
        self.pollers: list[QueuePoller] = []
        self.scheduler: Scheduler | None = None
        self.functions: dict[str, FunctionSpec] = {}
        self.routes: list[HttpRoute] = []
        self.queue_mappings: list[QueueMapping] = []
        self.schedules: list[ScheduleSpec] = []
        self.outputs: dict[str, str] = {}
        self.state: dict[str, Any] = {}
        self._saved_environ: dict[str, str | None] = {}
        self._http_api_ids: set[str] = set()
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._added_sys_path: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> LocalStack:
        """Start moto, deploy the template, load the handlers and start HTTP, the Lambda API, pollers and timers."""
        sam_template = load_template(self.template_path)
        if self.sources_file is not None and not self.sources_file.is_file():
            raise LocalStackError(f"sources file not found: {self.sources_file}")
        try:
            self._start(sam_template)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, sam_template: dict[str, Any]) -> None:
        """The start sequence; on any failure the caller stops whatever already runs."""
        # Bind the HTTP port first: a busy port should fail in a second, not after deploying.
        self.routes = http_routes(sam_template)
        self.http = self._bind_http()
        self.aws.start()
        self._set_environ(self.aws.environment())
        plan, artifacts = self._deploy(sam_template)
        self._read_back(sam_template, plan, artifacts)
        self._set_environ(self._function_environment())
        self.runner = FunctionRunner(self.functions.values(), self.region, self._concurrency)
        self._add_sys_path(self.runner.import_dirs())
        self._load_handlers()
        # Sources first: a provider calling in before they exist would get 404s.
        self._publish_sources_file()
        self.http.start(self.runner)
        self.lambda_api = self._start_lambda_api()
        self._start_event_sources()
        self.state = self._build_state()
        self._write_state_file()
        LOG.info("local stack %s up: webhooks at %s", self.stack_name, self.state["webhook_url_template"])

    def _bind_http(self) -> HttpApiServer:
        """The local API Gateway, bound but not yet serving."""
        try:
            return HttpApiServer(self.routes, port=self._http_port)
        except OSError as error:
            raise LocalStackError(f"cannot listen on 127.0.0.1:{self._http_port}: {error.strerror or error}") from error

    def _start_lambda_api(self) -> LambdaApiServer:
        """The local Lambda Invoke endpoint (moto cannot invoke), serving the loaded handlers."""
        assert self.runner is not None
        functions = {spec.arn: logical_id for logical_id, spec in self.functions.items()}
        try:
            server = LambdaApiServer(functions, self.region, self._account())
        except OSError as error:
            raise LocalStackError(f"cannot listen for the Lambda API: {error.strerror or error}") from error
        server.start(self.runner)
        return server

    def _load_handlers(self) -> None:
        """Import the handler modules; an import error is a one-line startup error."""
        assert self.runner is not None
        try:
            self.runner.load_handlers()
        except Exception as error:
            LOG.debug("handler import failed", exc_info=True)
            raise LocalStackError(f"cannot import a handler: {type(error).__name__}: {_one_line(error)}") from error

    def stop(self) -> None:
        """Stop timers, pollers, HTTP, the Lambda API and moto; restore the environment. Safe to call twice."""
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        for poller in self.pollers:
            poller.request_stop()  # all at once: each may sit in a 1 s long poll
        for poller in self.pollers:
            poller.stop()
        self.pollers = []
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.lambda_api is not None:
            self.lambda_api.stop()
            self.lambda_api = None
        self.aws.stop()
        if self.runner is not None:
            self.runner.unload_handlers()
        self._restore_environ()
        self._clients = {}  # they point at the stopped moto
        if self.state_file is not None and self.state and self.state_file.exists():
            # A state file naming dead ports would mislead whoever reads it next.
            self.state_file.unlink()

    # -- deployment ----------------------------------------------------------------------

    def client(self, service: str) -> Any:
        """A boto3 client for the local AWS (moto), shared per service (clients are thread-safe)."""
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = self._new_client(service)
            return self._clients[service]

    def _new_client(self, service: str) -> Any:
        """A boto3 client of its own (a poller's long polls should not queue behind others)."""
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.aws.endpoint_url,
            region_name=self.region,
            config=Config(retries={"max_attempts": 2, "mode": "standard"}),
        )

    def _deploy(self, sam_template: dict[str, Any]) -> tuple[MotoPlan, Artifacts]:
        """Package, translate and create the stack in moto; return the plan used."""
        packaged = copy.deepcopy(sam_template)
        s3 = self.client("s3")
        s3.create_bucket(Bucket=ARTIFACT_BUCKET)
        artifacts = package_template(packaged, self.template_path.parent, s3, ARTIFACT_BUCKET)
        translated = translate_template(packaged, self.parameters)
        plan = plan_for_moto(translated, artifacts)
        skipped = unsupported_types(plan.body)
        if skipped:
            # API Gateway v2 is emulated by the local HTTP server; the rest (alarms, policies...)
            # has no runtime effect here.
            LOG.info("moto creates no %s", ", ".join(skipped))
        self._create_stack(plan.body)
        return plan, artifacts

    def _create_stack(self, body: dict[str, Any]) -> None:
        """Create the stack and wait until it is complete; explain failures in one line."""
        cfn = self.client("cloudformation")
        declared = set((body.get("Parameters") or {}).keys())
        unknown = set(self.parameters) - declared - {"Stage"}
        if unknown:
            raise LocalStackError(f"template has no parameter(s) {sorted(unknown)}")
        parameters = [{"ParameterKey": k, "ParameterValue": v} for k, v in self.parameters.items() if k in declared]
        try:
            cfn.create_stack(
                StackName=self.stack_name,
                TemplateBody=json.dumps(body),
                Parameters=parameters,
                Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
            )
        except (ClientError, BotoCoreError) as error:
            raise LocalStackError(f"moto refused the stack: {_one_line(error)}") from error
        self._wait_for_stack(cfn)

    def _wait_for_stack(self, cfn: Any, timeout: float = 60.0) -> None:
        """Poll until CREATE_COMPLETE; any other final status is an error."""
        deadline = time.monotonic() + timeout
        while True:
            stack = cfn.describe_stacks(StackName=self.stack_name)["Stacks"][0]
            status = stack["StackStatus"]
            if status == "CREATE_COMPLETE":
                return
            if not status.endswith("IN_PROGRESS") or time.monotonic() > deadline:
                reason = stack.get("StackStatusReason", "no reason given")
                raise LocalStackError(f"stack {self.stack_name} ended {status}: {reason}")
            time.sleep(0.2)

    # -- reading the stack back ------------------------------------------------------------

    def _read_back(self, sam_template: dict[str, Any], plan: MotoPlan, artifacts: Artifacts) -> None:
        """Read outputs, resources and function configurations; derive routes, pollers, timers."""
        cfn = self.client("cloudformation")
        stack = cfn.describe_stacks(StackName=self.stack_name)["Stacks"][0]
        all_outputs = {o["OutputKey"]: str(o.get("OutputValue", "")) for o in stack.get("Outputs", [])}
        self.outputs = {k: v for k, v in all_outputs.items() if not k.startswith(HIDDEN_OUTPUT_PREFIX)}
        physical = self._physical_ids(cfn)
        self._install_state_machines(plan, physical, all_outputs)
        self.functions = self._function_specs(sam_template, plan, artifacts, physical)
        self._check_http_api_stages(sam_template)
        self._http_api_ids = {lid for lid, _ in resources_of_type(sam_template, "AWS::Serverless::HttpApi")}
        self._http_api_ids.add("ServerlessHttpApi")  # SAM's implicit API for events without ApiId
        self.schedules = self._schedules_with_arns(sam_template, physical)
        self.queue_mappings = self._queue_mappings(plan, all_outputs, physical)

    def _account(self) -> str:
        """The account moto deployed into, read off a function ARN."""
        for spec in self.functions.values():
            return spec.arn.split(":")[4]
        return DEFAULT_ACCOUNT

    def _schedules_with_arns(
        self, sam_template: Mapping[str, Any], physical: Mapping[str, tuple[str, str]]
    ) -> list[ScheduleSpec]:
        """Schedules from the template, with the rule/schedule ARN their events name."""
        account = self._account()
        specs: list[ScheduleSpec] = []
        for spec in schedules(sam_template):
            if spec.kind == "Schedule":
                # moto names the rule itself; fall back to the logical id if it was skipped.
                name = physical.get(spec.event_id, ("", spec.event_id))[1] or spec.event_id
                arn = f"arn:aws:events:{self.region}:{account}:rule/{name}"
            else:
                # moto's CloudFormation skips AWS::Scheduler::Schedule: the name is the logical id.
                arn = f"arn:aws:scheduler:{self.region}:{account}:schedule/default/{spec.event_id}"
            specs.append(dataclasses.replace(spec, resource_arn=arn))
        return specs

    def _physical_ids(self, cfn: Any) -> dict[str, tuple[str, str]]:
        """Logical id → (resource type, physical id); moto lists skipped resources without ids."""
        resources = cfn.describe_stack_resources(StackName=self.stack_name)["StackResources"]
        ids: dict[str, tuple[str, str]] = {}
        for resource in resources:
            logical_id = resource.get("LogicalResourceId")
            if logical_id:
                ids[logical_id] = (resource.get("ResourceType", ""), resource.get("PhysicalResourceId", ""))
        return ids

    def _install_state_machines(
        self, plan: MotoPlan, physical: Mapping[str, tuple[str, str]], outputs: Mapping[str, str]
    ) -> None:
        """Move the stack's state machines to moto's executing backend, definitions substituted.

        moto's CloudFormation creates state machines in its plain Step Functions backend, but
        with ``execute_state_machine`` on, the API serves (and runs) only its parser backend's.
        So: read each definition while execution is still off, switch it on, and create the
        machine again under the same name, hence the same ARN the outputs and env already hold.
        """
        sfn = self.client("stepfunctions")
        self.aws.execute_state_machines(False)  # a previous stack in this process may have left it on
        machines = []
        for logical_id, (resource_type, arn) in physical.items():
            if resource_type != "AWS::StepFunctions::StateMachine":
                continue
            described = sfn.describe_state_machine(stateMachineArn=arn)
            placeholders = plan.substitutions.get(logical_id, {})
            values = {name: outputs.get(ref, ref) for name, ref in placeholders.items()}
            machines.append((described, substitute_definition(described["definition"], values)))
        self.aws.execute_state_machines(True)
        for described, definition in machines:
            try:
                sfn.create_state_machine(
                    name=described["name"],
                    definition=definition,
                    roleArn=described["roleArn"],
                    type=described.get("type", "STANDARD"),
                )
            except ClientError as error:
                raise LocalStackError(f"state machine {described['name']} rejected: {_one_line(error)}") from error

    def _function_specs(
        self,
        sam_template: dict[str, Any],
        plan: MotoPlan,
        artifacts: Artifacts,
        physical: Mapping[str, tuple[str, str]],
    ) -> dict[str, FunctionSpec]:
        """Build each function's spec from its deployed configuration and its source directory."""
        code_dirs, _ = function_sources(sam_template, self.template_path.parent)
        lambda_client = self.client("lambda")
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
                layer_dirs=self._function_layer_dirs(logical_id, plan, artifacts),
                environment=_string_values((config.get("Environment") or {}).get("Variables") or {}),
            )
        return specs

    def _function_layer_dirs(self, function_id: str, plan: MotoPlan, artifacts: Artifacts) -> tuple[Path, ...]:
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

    def _check_http_api_stages(self, sam_template: Mapping[str, Any]) -> None:
        """Warn when an HttpApi has a named stage: routes are served here without its prefix."""
        for logical_id, props in resources_of_type(sam_template, "AWS::Serverless::HttpApi"):
            stage = props.get("StageName", "$default")
            if stage != "$default":
                LOG.warning("%s has StageName %r; local routes are served without a stage prefix", logical_id, stage)

    def _queue_mappings(
        self, plan: MotoPlan, outputs: Mapping[str, str], physical: Mapping[str, tuple[str, str]]
    ) -> list[QueueMapping]:
        """Turn the removed event source mappings into SQS poller definitions."""
        by_name = {pid: lid for lid, (rtype, pid) in physical.items() if rtype == "AWS::Lambda::Function"}
        sqs = self.client("sqs")
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

    # -- environment -----------------------------------------------------------------------

    def _function_environment(self) -> dict[str, str]:
        """The union of all functions' variables plus local overrides (e.g. the webhook base URL)."""
        assert self.http is not None
        environments = {fid: spec.environment for fid, spec in self.functions.items()}
        try:
            merged = merge_environments(environments, self._env_overrides)
        except ValueError as error:
            raise LocalStackError(str(error)) from error
        merged = {key: self._localise(value) for key, value in merged.items()}
        if WEBHOOK_BASE_URL_VARIABLE in merged and WEBHOOK_BASE_URL_VARIABLE not in self._env_overrides:
            # API Gateway does not exist in moto: the local HTTP server is the webhook endpoint.
            merged[WEBHOOK_BASE_URL_VARIABLE] = self.http.base_url
        return merged

    def _localise(self, value: str) -> str:
        """Point an HTTP API endpoint URL at the local HTTP server.

        moto creates no API, so it leaves ``https://${Api}.execute-api...`` unresolved.
        """
        assert self.http is not None
        base_url = self.http.base_url

        def replace(match: re.Match[str]) -> str:
            return base_url if match.group(1) in self._http_api_ids else match.group(0)

        return re.sub(r"https://\$\{(\w+)\}\.execute-api\.[A-Za-z0-9.${}:-]+", replace, value)

    def _set_environ(self, values: Mapping[str, str]) -> None:
        """Set process variables, remembering the previous values for :meth:`_restore_environ`."""
        for key, value in values.items():
            self._saved_environ.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _restore_environ(self) -> None:
        """Put back every process variable this stack changed, and sys.path."""
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environ = {}
        for entry in self._added_sys_path:
            if entry in sys.path:
                sys.path.remove(entry)
        self._added_sys_path = []

    def _add_sys_path(self, directories: list[Path]) -> None:
        """Put layer directories on sys.path, as Lambda puts /opt/python."""
        for directory in directories:
            entry = str(directory)
            if entry not in sys.path:
                sys.path.insert(0, entry)
                self._added_sys_path.append(entry)

    # -- sources, event sources, state -----------------------------------------------------

    def _publish_sources_file(self) -> None:
        """Store the sources file in Secrets Manager where the functions look for it."""
        if self.sources_file is None:
            return
        prefix = os.environ.get(SOURCES_PREFIX_VARIABLE)
        if prefix is None:
            raise LocalStackError(f"no function has {SOURCES_PREFIX_VARIABLE}; cannot publish {self.sources_file}")
        publish = self._publish_sources or _default_sources_publisher()
        try:
            publish(self.sources_file, self.client("secretsmanager"), prefix)
        except Exception as error:
            # callvault raises ConfigError (a ValueError) naming the offending entry.
            raise LocalStackError(f"cannot publish sources file {self.sources_file}: {_one_line(error)}") from error

    def _start_event_sources(self) -> None:
        """Start one poller per removed event source mapping (times concurrency) and the timers."""
        assert self.runner is not None
        for mapping in self.queue_mappings:
            for _ in range(self._concurrency):
                poller = QueuePoller(mapping, self.runner, self._new_client("sqs"), self.region, self._redelivery_delay)
                poller.start()
                self.pollers.append(poller)
        self.scheduler = Scheduler(self.schedules, self.runner, self.region, self._schedule_interval, self._account())
        if self._run_schedules:
            self.scheduler.start()

    def _build_state(self) -> dict[str, Any]:
        """The state file content: endpoints plus the stack outputs demo and tests need."""
        assert self.http is not None and self.lambda_api is not None
        state: dict[str, Any] = {
            "webhook_base_url": self.http.base_url,
            "webhook_url_template": f"{self.http.base_url}/webhooks/{{source_id}}",
            "aws_endpoint_url": self.aws.endpoint_url,
            "lambda_endpoint_url": self.lambda_api.endpoint_url,
            "region": self.region,
            "stack_name": self.stack_name,
            "outputs": {key: self._localise(value) for key, value in self.outputs.items()},
        }
        for key, output in STATE_OUTPUTS.items():
            state[key] = self.outputs.get(output)
        return state

    def _write_state_file(self) -> None:
        """Write the state JSON atomically so a reader never sees half a file."""
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        partial.write_text(json.dumps(self.state, indent=2) + "\n", encoding="utf-8")
        partial.replace(self.state_file)

    # -- driving the stack -----------------------------------------------------------------

    def invoke(self, logical_id: str, event: Any) -> Any:
        """Invoke a function's handler synchronously with ``event``; its exceptions propagate."""
        if self.runner is None:
            raise RuntimeError("the stack is not running")
        return self.runner.invoke(logical_id, event)

    def run_schedules_now(self, function_id: str | None = None) -> dict[str, Any]:
        """Fire every timer (of one function, if given) once, synchronously; return each
        schedule's result (or exception)."""
        if self.scheduler is None:
            raise RuntimeError("the stack is not running")
        return self.scheduler.run_all_now(function_id)

    def wait_idle(self, timeout: float = 30.0, settle: float = 0.2) -> None:
        """Block until queues are drained, no handler runs and no execution is RUNNING.

        Idle must hold on two checks ``settle`` seconds apart (a handler may be between
        receiving and acknowledging). Raises TimeoutError naming what is still busy.
        """
        deadline = time.monotonic() + timeout
        calm_since: float | None = None
        while True:
            busy = self.busy()
            now = time.monotonic()
            if busy:
                calm_since = None
            elif calm_since is None:
                calm_since = now
            elif now - calm_since >= settle:
                return
            if now > deadline:
                raise TimeoutError(f"not idle after {timeout:g}s: {'; '.join(busy)}")
            time.sleep(0.05)

    def busy(self) -> list[str]:
        """What keeps the stack from being idle right now (empty list when idle)."""
        reasons: list[str] = []
        if self.runner is not None and self.runner.in_flight:
            reasons.append(f"{self.runner.in_flight} invocation(s) in flight")
        if self.lambda_api is not None and self.lambda_api.pending:
            reasons.append(f"{self.lambda_api.pending} Event invocation(s) through the Lambda API pending")
        if self.scheduler is not None and self.scheduler.startup_pending:
            reasons.append("start-up timers not yet run")
        reasons.extend(self._busy_queues())
        reasons.extend(self._running_executions())
        return reasons

    def _busy_queues(self) -> list[str]:
        """Polled queues that still hold visible, in-flight or delayed messages."""
        sqs = self.client("sqs")
        reasons: list[str] = []
        for queue_url in sorted({m.queue_url for m in self.queue_mappings}):
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

    def _running_executions(self) -> list[str]:
        """State machines of this stack with RUNNING executions."""
        sfn = self.client("stepfunctions")
        reasons: list[str] = []
        for machine in sfn.list_state_machines()["stateMachines"]:
            running = sfn.list_executions(stateMachineArn=machine["stateMachineArn"], statusFilter="RUNNING")
            if running["executions"]:
                reasons.append(f"{len(running['executions'])} execution(s) of {machine['name']} running")
        return reasons


def _string_values(variables: Mapping[str, Any]) -> dict[str, str]:
    """Environment values as Lambda sees them: strings (moto keeps a Number parameter an int)."""
    return {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in variables.items()}


def _default_sources_publisher() -> SourcesPublisher:
    """``callvault.sources.publish_sources_file``, imported late: it lives in the layer."""
    try:
        from callvault.sources import publish_sources_file  # type: ignore[import-not-found,unused-ignore]
    except ImportError as error:
        raise LocalStackError(f"cannot import callvault.sources.publish_sources_file: {error}") from error
    publisher: SourcesPublisher = publish_sources_file
    return publisher
