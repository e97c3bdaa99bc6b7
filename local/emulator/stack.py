"""Create the SAM application from ``template.yaml`` in moto and run its handlers as Lambda would.

The template is the single source of truth: every resource comes from translating it the way
``sam package`` + ``sam deploy`` would, and everything the runtime needs (function code, handlers,
environment, HTTP routes, queue pollers, timers) is read back from the template and the created
stack rather than from a second hand-kept list.

moto covers the AWS APIs but not the compute glue: API Gateway v2 is skipped by its
CloudFormation, Lambda cannot be invoked without Docker, event source mappings would swallow
messages, and state machines ignore ``DefinitionS3Location``/``DefinitionSubstitutions``.
:class:`LocalStack` deploys, reads back, starts and stops; the modules beside it fill those gaps.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from local.emulator import stack_readback
from local.emulator.errors import LocalStackError, one_line
from local.emulator.execution_environment import EnvironmentFailed
from local.emulator.function_runner import FunctionRunner, FunctionSpec
from local.emulator.http_api import HttpApiServer, HttpRoute
from local.emulator.lambda_api import LambdaApiServer
from local.emulator.moto_plan import (
    HIDDEN_OUTPUT_PREFIX,
    MotoPlan,
    complete_stack,
    plan_for_moto,
    unsupported_types,
)
from local.emulator.moto_server import DEFAULT_ACCOUNT, DEFAULT_REGION, MotoAws
from local.emulator.packaging import ARTIFACT_BUCKET, Artifacts, package_template
from local.emulator.scheduler import Scheduler, ScheduleSpec
from local.emulator.sqs_poller import QueueMapping, QueuePoller, start_pollers, stop_pollers
from local.emulator.template import load_template, resources_of_type, translate_template

LOG = logging.getLogger("local.emulator.stack")

DEFAULT_STACK_NAME = "callvault-local"
# Stack outputs copied into the state file under short names (the names demo/tests use).
STATE_OUTPUTS = {
    "bucket": "RecordingsBucketName",
    "table": "LedgerTableName",
    "queue_url": "FetchQueueUrl",
    "dlq_url": "FetchDeadLetterQueueUrl",
    "state_machine_arn": "RetryStateMachineArn",
    "alert_topic_arn": "AlertTopicArn",
}
# Where the functions look for the sources (the whole documents) and the webhook for its copies;
# a publisher takes (sources file, Secrets Manager client, sources prefix, webhook prefix).
SOURCES_PREFIX_VARIABLE = "SOURCES_SECRET_PREFIX"
WEBHOOK_PREFIX_VARIABLE = "WEBHOOK_SECRET_PREFIX"
WEBHOOK_BASE_URL_VARIABLE = "WEBHOOK_BASE_URL"
SourcesPublisher = Callable[[Path, Any, str, str], Any]


class LocalStack:
    """The SAM application running on this machine: moto as AWS, the real handlers in execution
    environments of their own (processes).

    Usage::

        with LocalStack(template="template.yaml", sources_file="local/sources.yaml") as stack:
            requests.post(stack.state["webhook_url_template"].format(source_id="pbx-1"), ...)
            stack.wait_idle(30)

    Each function runs in execution environments of its own (processes, with only its own
    environment variables); this process gets the variables that point boto3 at moto, so only
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
        ``concurrency`` is the number of execution environments per function (each a process
        that imports the handler) and of pollers per queue.
        ``publish_sources`` defaults to ``callvault.sources_file.publish_sources_file``.
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
        self.routes = stack_readback.http_routes(sam_template)
        self.http = self._bind_http()
        self.aws.start()
        self._set_environ(self.aws.environment())
        plan, artifacts = self._deploy(sam_template)
        self._read_back(sam_template, plan, artifacts)
        self.runner = FunctionRunner(self.functions.values(), self._concurrency, self._function_environments())
        self._add_sys_path([d for spec in self.functions.values() for d in spec.layer_dirs])
        self._start_functions()
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

    def _start_functions(self) -> None:
        """Start the execution environments; a handler that does not import is a one-line startup error."""
        assert self.runner is not None
        try:
            self.runner.start()
        except EnvironmentFailed as error:
            raise LocalStackError(f"cannot import a handler: {one_line(error)}") from error

    def stop(self) -> None:
        """Stop timers, pollers, HTTP, the Lambda API and moto; restore the environment. Safe to call twice."""
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        stop_pollers(self.pollers)
        self.pollers = []
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.lambda_api is not None:
            self.lambda_api.stop()
            self.lambda_api = None
        self.aws.stop()
        if self.runner is not None:
            self.runner.stop()
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
        plan = plan_for_moto(translated, artifacts, self.parameters)
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
            raise LocalStackError(f"moto refused the stack: {one_line(error)}") from error
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
        physical = stack_readback.physical_ids(cfn, self.stack_name)
        complete_stack(self.client, self.aws, plan, sam_template, physical, all_outputs)
        self.functions = stack_readback.function_specs(
            sam_template, self.template_path.parent, plan, artifacts, physical, self.client("lambda")
        )
        stack_readback.check_http_api_stages(sam_template)
        self._http_api_ids = {lid for lid, _ in resources_of_type(sam_template, "AWS::Serverless::HttpApi")}
        self._http_api_ids.add("ServerlessHttpApi")  # SAM's implicit API for events without ApiId
        self.schedules = stack_readback.schedules_with_arns(sam_template, physical, self.region, self._account())
        self.queue_mappings = stack_readback.queue_mappings(plan, all_outputs, physical, self.client("sqs"))

    def _account(self) -> str:
        """The account moto deployed into, read off a function ARN."""
        for spec in self.functions.values():
            return spec.arn.split(":")[4]
        return DEFAULT_ACCOUNT

    # -- environment -----------------------------------------------------------------------

    def _function_environments(self) -> dict[str, dict[str, str]]:
        """Each function's variables, as Lambda gives them: the template's (localised), the
        runtime's own (function name, region, …), the way to moto, and local overrides."""
        assert self.http is not None
        environments: dict[str, dict[str, str]] = {}
        for function_id, spec in self.functions.items():
            variables = {key: self._localise(value) for key, value in spec.environment.items()}
            if WEBHOOK_BASE_URL_VARIABLE in variables:
                # API Gateway does not exist in moto: the local HTTP server is the webhook endpoint.
                variables[WEBHOOK_BASE_URL_VARIABLE] = self.http.base_url
            environments[function_id] = {
                **self.aws.environment(),
                **spec.runtime_variables(),
                **variables,
                "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
                **self._env_overrides,
            }
        return environments

    def _localise(self, value: str) -> str:
        assert self.http is not None
        return stack_readback.localise(value, self._http_api_ids, self.http.base_url)

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
        prefixes = []
        for variable in (SOURCES_PREFIX_VARIABLE, WEBHOOK_PREFIX_VARIABLE):
            values = [spec.environment.get(variable) for spec in self.functions.values()]
            prefix = next((value for value in values if value), None)
            if prefix is None:
                raise LocalStackError(f"no function has {variable}; cannot publish {self.sources_file}")
            prefixes.append(prefix)
        publish = self._publish_sources or _default_sources_publisher()
        try:
            publish(self.sources_file, self.client("secretsmanager"), *prefixes)
        except Exception as error:
            # callvault raises ConfigError (a ValueError) naming the offending entry.
            raise LocalStackError(f"cannot publish sources file {self.sources_file}: {one_line(error)}") from error

    def _start_event_sources(self) -> None:
        """Start one poller per removed event source mapping (times concurrency) and the timers."""
        assert self.runner is not None
        for mapping in self.queue_mappings:
            sqs = partial(self._new_client, "sqs")
            self.pollers += start_pollers(
                mapping, self.runner, sqs, self.region, self._concurrency, self._redelivery_delay
            )
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
        reasons.extend(stack_readback.busy_queues(self.client("sqs"), (m.queue_url for m in self.queue_mappings)))
        reasons.extend(stack_readback.running_executions(self.client("stepfunctions")))
        return reasons


def _default_sources_publisher() -> SourcesPublisher:
    """``callvault.sources_file.publish_sources_file``, imported late: it lives in the layer."""
    try:
        from callvault.sources_file import publish_sources_file  # type: ignore[import-not-found,unused-ignore]
    except ImportError as error:
        raise LocalStackError(f"cannot import callvault.sources_file.publish_sources_file: {error}") from error
    publisher: SourcesPublisher = publish_sources_file
    return publisher
