"""The local stack for integration tests: moto server + provider simulators + the real handlers.

One stack per test module (deploying the template takes a few seconds; moto's backends are
process-wide, so a module that starts stacks of its own cannot share one), with simulators of its
own: a PBX pushes every report to every live token's URL, so a simulator that outlived its stack
would keep posting to the stack's freed port, which by then may be anyone's (another module's
server, another process's). Each special situation gets its own PBX simulator and source, because
a PBX locks out an address after failed logins: sharing one simulator would let one test's faults
leak into another's.

The Alibaba simulators check request timestamps against the wall clock (the functions sign with
it), so a test may move their simulated clock (``advance_time``) to make a recording appear, and
the Dyplsapi ones wait for the webhook's acknowledgement as long as a test may take: these tests
pin what is archived; how fast the webhook answers (Dyplsapi allows 700 ms) is `make bench`'s.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
import yaml

from local.emulator.stack import LocalStack
from local.simulators.ccc import CccCall, CccSimulator
from local.simulators.dypls import DyplsSimulator
from local.simulators.pbx import PbxSimulator, SimulatedCall, make_self_signed
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

ZONE = ZoneInfo("Asia/Shanghai")
# Fast retries so that the workflow's waits (real time in moto) keep the suite short.
RETRY_PARAMETERS = {"RetryMaxAttempts": "4", "RetryBaseDelaySeconds": "1", "RetryMaxDelaySeconds": "2"}
MIB = 1024 * 1024
# The fetcher's part size in these stacks.
PART_SIZE = 5 * MIB
# A miniature of the callvault shape, which pins the local runtime apart from the real handlers
# (test_local_stack_parts.py, test_local_stack_mini.py).
MINI = Path(__file__).resolve().parent / "fixtures" / "mini"


@dataclass
class Pbx:
    """A simulated PBX and the source id under which the stack knows it."""

    source_id: str
    token: str
    simulator: PbxSimulator


@pytest.fixture(scope="module")
def pbxs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Pbx]]:
    tls = make_self_signed(tmp_path_factory.mktemp("tls"))
    simulators = {
        "office-pbx": PbxSimulator(tz=ZONE),
        "dup-pbx": PbxSimulator(tz=ZONE),
        "faulty-pbx": PbxSimulator(tz=ZONE),
        "slow-pbx": PbxSimulator(tz=ZONE),
        "tls-pbx": PbxSimulator(tz=ZONE, tls=tls),
        "wrong-password-pbx": PbxSimulator(tz=ZONE, password="the-real-password"),
        "recon-pbx": PbxSimulator(tz=ZONE),
        "ops-pbx": PbxSimulator(tz=ZONE),
        "redirect-pbx": PbxSimulator(tz=ZONE),
        "restart-pbx": PbxSimulator(tz=ZONE),  # ignores Range, like every simulated PBX by default
        "storage-pbx": PbxSimulator(tz=ZONE),
    }
    for simulator in simulators.values():
        simulator.start()
    yield {
        source_id: Pbx(source_id, f"{source_id}-token-{uuid.uuid4().hex}", simulator)
        for source_id, simulator in simulators.items()
    }
    for simulator in simulators.values():
        simulator.stop()


# Reconciliation in the tests: a call is settled once it ended (no wait for a push), and the
# first run looks an hour back. Only these sources are reconciled, and only when a test asks.
RECONCILED = {"recon-pbx", "ops-pbx", "recon-ccc-2017", "recon-ccc-2020", "recon-dypls"}
RECONCILE = {"wait_for_push": "0s", "overlap": "1h", "first_lookback": "1h"}
NO_RECONCILE = {"enabled": False}


def started_pbxs(simulators: dict[str, PbxSimulator]) -> Iterator[dict[str, Pbx]]:
    """Start the simulators, yield them as sources (id = key, a fresh token), stop them after
    (releasing any the test left hanging): the body of a module's own ``pbxs`` fixture."""
    for simulator in simulators.values():
        simulator.start()
    yield {name: Pbx(name, f"{name}-token-{uuid.uuid4().hex}", sim) for name, sim in simulators.items()}
    for simulator in simulators.values():
        simulator.release()
        simulator.stop()


def simulated_pbx_source(pbx: Pbx, pbx_settings: dict[str, Any] | None = None, **common: Any) -> dict[str, Any]:
    """A source document for a simulated PBX, without reconciliation (``common``: more fields)."""
    section = {"base_url": pbx.simulator.base_url, "username": "api", "password": "apipass", **(pbx_settings or {})}
    document = {"id": pbx.source_id, "provider": "pbx", "webhook_token": pbx.token, "timezone": "Asia/Shanghai"}
    return {**document, "reconcile": {"enabled": False}, "pbx": section, **common}


def _source(pbx: Pbx, **pbx_settings: Any) -> dict[str, Any]:
    return {
        "id": pbx.source_id,
        "provider": "pbx",
        "webhook_token": pbx.token,
        "timezone": "Asia/Shanghai",
        "reconcile": RECONCILE if pbx.source_id in RECONCILED else NO_RECONCILE,
        "pbx": {
            "base_url": pbx.simulator.base_url,
            "username": "api",
            "password": "apipass",
            "api_versions": {"recording/get_random": "v0.0.1"},
            **pbx_settings,
        },
    }


@dataclass
class AlibabaSource:
    """A simulated CCC instance or Dypls pool and the source id under which the stack knows it."""

    source_id: str
    token: str
    simulator: CccSimulator | DyplsSimulator
    document: dict[str, Any]


ACCESS = {"LTAI-it-key": "it-secret"}
# How long a simulated Dyplsapi waits for the webhook's acknowledgement (see the module docstring).
ACK_TIMEOUT_S = 30.0
# The forwarder of the "ccc-signed" source signs its events (docs/sources.md).
SIGNING_SECRET = "ccc-signed-forwarder-secret-42"
# A source whose provider is down for good: its webhook must still answer at once.
OFFLINE_ENDPOINT = "http://127.0.0.1:9"


def _ccc(instance_id: str, *, credentials: dict[str, str] = ACCESS, **options: Any) -> CccSimulator:
    return CccSimulator(instance_id=instance_id, credentials=credentials, timestamp_clock=time.time, **options)


def _dypls(pool_key: str) -> DyplsSimulator:
    return DyplsSimulator(
        credentials=ACCESS, pool_keys={pool_key}, ack_timeout_s=ACK_TIMEOUT_S, timestamp_clock=time.time
    )


@pytest.fixture(scope="module")
def alibaba() -> Iterator[dict[str, AlibabaSource]]:
    simulators: dict[str, tuple[CccSimulator | DyplsSimulator, dict[str, Any]]] = {
        "ccc-2017": (_ccc("inst-2017"), {"api_version": "2017-07-05"}),
        "ccc-typographic": (_ccc("inst-typo", quote_style="typographic"), {"api_version": "2017-07-05"}),
        "ccc-2020": (_ccc("inst-2020", api_versions=("2020-07-01",)), {"api_version": "2020-07-01"}),
        "ccc-wrong-secret": (_ccc("inst-bad", credentials={"LTAI-it-key": "other"}), {}),
        "dypls-pool": (_dypls("FC123456"), {}),
        "dypls-offline": (_dypls("FC999999"), {}),
        "recon-ccc-2017": (_ccc("inst-r2017"), {"api_version": "2017-07-05"}),
        "recon-ccc-2020": (
            _ccc("inst-r2020", api_versions=("2020-07-01",)),
            {"api_version": "2020-07-01", "reconcile_recordings": ["mono", "multichannel"]},
        ),
        "recon-dypls": (_dypls("FC777777"), {}),
        "ccc-signed": (_ccc("inst-signed"), {"api_version": "2017-07-05"}),
        "resume-ccc": (_ccc("inst-resume"), {"api_version": "2017-07-05"}),
    }
    sources = {}
    for source_id, (simulator, extra) in simulators.items():
        simulator.start()
        token = f"{source_id}-token-{uuid.uuid4().hex}"
        access = {"access_key_id": "LTAI-it-key", "access_key_secret": "it-secret", "download_hosts": ["127.0.0.1"]}
        if isinstance(simulator, CccSimulator):
            instance = simulator.instance_id
            # NotExist.Record means "not yet" for ten minutes: however slow the machine, never "gone".
            section = {"instance_id": instance, "endpoint": simulator.base_url, "not_ready_window_seconds": 600}
            document = {"provider": "ccc", "ccc": {**section, **access, **extra}}
        else:
            endpoint = OFFLINE_ENDPOINT if source_id == "dypls-offline" else simulator.base_url
            pool = sorted(simulator.pool_keys)[0]
            document = {"provider": "dypls", "dypls": {"pool_key": pool, "endpoint": endpoint, **access}}
        document |= {"id": source_id, "webhook_token": token, "timezone": "Asia/Shanghai"}
        document["reconcile"] = RECONCILE if source_id in RECONCILED else NO_RECONCILE
        if source_id == "recon-dypls":
            # The grace for a recording receipt: tests let it pass by moving the due time.
            document["reconcile"] = {"wait_for_push": "1h"}
        if source_id == "ccc-signed":
            document["webhook_signing_secret"] = SIGNING_SECRET
        sources[source_id] = AlibabaSource(source_id, token, simulator, document)
    yield sources
    for simulator, _ in simulators.values():
        simulator.stop()


@pytest.fixture(scope="module")
def stack(
    pbxs: dict[str, Pbx], alibaba: dict[str, AlibabaSource], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    work = tmp_path_factory.mktemp("stack")
    tls_ca = Path(pbxs["tls-pbx"].simulator.tls.ca_path).read_text()  # type: ignore[union-attr]
    sources = [
        _source(pbxs["office-pbx"]),
        _source(pbxs["dup-pbx"]),
        _source(pbxs["faulty-pbx"]),
        _source(pbxs["slow-pbx"], read_timeout_seconds=1),
        _source(pbxs["tls-pbx"], ca_bundle=tls_ca),
        _source(pbxs["wrong-password-pbx"]),
        _source(pbxs["recon-pbx"]),
        _source(pbxs["ops-pbx"]),
        _source(pbxs["redirect-pbx"]),
        _source(pbxs["restart-pbx"]),
        _source(pbxs["storage-pbx"]),
        *(source.document for source in alibaba.values()),
    ]
    # S3's smallest part: a recording of a few MB is already a multipart upload.
    with stack_of(work, sources, env_overrides={"TRANSFER_PART_SIZE_MIB": str(PART_SIZE // MIB)}) as running:
        # The session keeper logs in: PBXs now push reports. (Reconciliation runs only where a
        # test asks for it: these simulators outlive the stack and hold other modules' calls.)
        running.run_schedules_now("PbxSessionKeeperFunction")
        yield running


# ---------------------------------------------------------------------------------- helpers


def stack_of(work: Path, sources: list[dict[str, Any]], **options: Any) -> LocalStack:
    """The real template on a module's own sources: fast retries, no schedules (a test runs what
    it needs), two execution environments per function; ``options`` override LocalStack's."""
    sources_file = work / "sources.yaml"
    sources_file.write_text(yaml.safe_dump({"sources": sources}))
    settings: dict[str, Any] = {
        "parameters": RETRY_PARAMETERS,
        "run_schedules": False,
        "concurrency": 2,
        "redelivery_delay": 1,
        **options,
    }
    return LocalStack(ROOT / "template.yaml", sources_file=sources_file, state_file=work / "state.json", **settings)


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy; returns its value or fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


class Archive:
    """Read-only views of what the stack archived: ledger items and S3 objects."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.bucket = stack.state["bucket"]
        self.table = stack.client("dynamodb")
        self.s3 = stack.client("s3")

    def files(self, source_id: str, call_id: str) -> list[dict[str, Any]]:
        reply = self.table.query(
            TableName=self.stack.state["table"],
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"CALL#{source_id}#{call_id}"}},
            ConsistentRead=True,
        )
        return [{name: next(iter(value.values())) for name, value in item.items()} for item in reply["Items"]]

    def settled(self, source_id: str, call_id: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait until the call's files are all STORED or FAILED (and the stack is idle)."""

        def done() -> list[dict[str, Any]] | None:
            files = self.files(source_id, call_id)
            if len(files) >= count and all(f["status"] in ("STORED", "FAILED") for f in files):
                return files
            return None

        files = wait_for(done, 60, f"call {call_id} of {source_id} to settle")
        self.stack.wait_idle(30)
        return self.files(source_id, call_id) if files else files

    def versions(self, key: str) -> list[dict[str, Any]]:
        reply = self.s3.list_object_versions(Bucket=self.bucket, Prefix=key)
        return [v for v in reply.get("Versions", []) if v["Key"] == key]

    def body(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def open_multipart_uploads(self) -> list[dict[str, Any]]:
        return list(self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))


@pytest.fixture(scope="module")
def archive(stack: LocalStack) -> Archive:
    return Archive(stack)


def webhook_url(stack: LocalStack, source_id: str) -> str:
    return str(stack.state["webhook_url_template"]).format(source_id=source_id)


def post_report(
    stack: LocalStack, source_id: str, report: Any, *, token: str | None, how: str = "query"
) -> requests.Response:
    """POST a report like the PBX does (token in the query) or like a forwarder (header)."""
    body = report if isinstance(report, bytes) else json.dumps(report).encode()
    params = {"token": token} if token is not None and how == "query" else {}
    headers = {"Content-Type": "application/json", "User-Agent": "WebAPI"}
    if token is not None and how == "header":
        headers["X-Webhook-Token"] = token
    return requests.post(webhook_url(stack, source_id), params=params, data=body, headers=headers, timeout=10)


def forward(stack: LocalStack, source: AlibabaSource, call: CccCall) -> requests.Response:
    """What the customer's softphone forwarder sends when the agent hangs up."""
    event = {"contactId": call.contact_id, "callTime": int(call.start * 1000)}
    return requests.post(
        webhook_url(stack, source.source_id),
        data=json.dumps(event),
        headers={"Content-Type": "application/json", "X-Webhook-Token": source.token},
        timeout=10,
    )


def pbx_job(pbx: Pbx, call: SimulatedCall) -> dict[str, Any]:
    """The FetchJob (as queued JSON) the webhook makes of a PBX call's NewCdr report."""
    return {
        "source_id": pbx.source_id,
        "provider": "pbx",
        "call_id": call.callid,
        "call_time": call.timestart.isoformat(),
        "locator": {"recording": call.recording},
        "file_name": call.recording,
    }


def concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at the same moment in threads; returns their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


class Alerts:
    """What operators are told: an SQS queue subscribed to the stack's alert topic."""

    def __init__(self, stack: LocalStack) -> None:
        self.sqs = stack.client("sqs")
        self.url = self.sqs.create_queue(QueueName="test-alerts")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        stack.client("sns").subscribe(
            TopicArn=stack.state["alert_topic_arn"],
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        self.bodies: list[str] = []

    def mentioning(self, text: str) -> list[str]:
        while True:
            reply = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = reply.get("Messages", [])
            if not messages:
                break
            self.bodies += [m["Body"] for m in messages]
            for m in messages:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
        return [body for body in self.bodies if text in body]


@pytest.fixture(scope="module")
def alerts(stack: LocalStack) -> Alerts:
    return Alerts(stack)
