"""The Dypls number pool the benchmark's callvault runs archive from.

The real Dypls simulator (``local.simulators.dypls``) answers the fetcher's signed
``QueryRecordFileDownloadUrl`` calls; only its download links differ: each recording's link
points at the benchmark's file server (``bench.file_server``), at the generated file the run
routed to that call, so a 1 GB recording is served without being held in memory. The pool's
source is registered in Secrets Manager and the ledger table created (from ``template.yaml``)
in the benchmark's moto, as the stack would have them.

Runs in the orchestrating process, so none of this is counted in a measured process.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3

from bench.file_server import file_path
from callvault.providers.interface import InboundRequest
from callvault.sources import parse_source
from local.emulator.template import load_template
from local.simulators.dypls import DyplsSimulator
from local.simulators.oss import OssSimulator

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ID = "bench-pool"
SECRET_PREFIX = "callvault/bench/sources/"  # noqa: S105 - a secret's name
LEDGER_TABLE = "callvault-bench-ledger"
POOL_KEY = "FC123456"
ACCESS_KEY_ID = "LTAI-bench"
ACCESS_KEY_SECRET = "bench-secret"  # noqa: S105 - the simulator's local key


class LinksToFileServer(OssSimulator):
    """The simulator's object storage as far as its links go: each recording's signed link is a
    link to the file server's file routed to it (``route``). Never started: nothing is served here."""

    def __init__(self, file_server: str) -> None:
        super().__init__()
        self._file_server = file_server
        self._routes: dict[str, str] = {}

    def route(self, key: str, path_and_query: str) -> None:
        with self._lock:
            self._routes[key] = path_and_query

    def sign_url(self, bucket: str, key: str, expires: int) -> str:
        with self._lock:
            return f"{self._file_server}{self._routes[key]}"


class DyplsPool:
    """A context manager: the simulator running, the source registered, the ledger table created."""

    def __init__(self, aws: boto3.session.Session, aws_endpoint: str, file_server: str) -> None:
        self._aws = aws
        self._aws_endpoint = aws_endpoint
        self._links = LinksToFileServer(file_server)
        self._simulator = DyplsSimulator(
            credentials={ACCESS_KEY_ID: ACCESS_KEY_SECRET}, pool_keys={POOL_KEY}, oss=self._links
        )
        self._document: dict[str, Any] = {}

    def __enter__(self) -> DyplsPool:
        self._simulator.start()
        self._document = {
            "id": SOURCE_ID,
            "provider": "dypls",
            "webhook_token": "bench-pool-token-0123456789",
            "timezone": "Asia/Shanghai",
            "dypls": {
                "pool_key": POOL_KEY,
                "endpoint": self._simulator.base_url,
                "access_key_id": ACCESS_KEY_ID,
                "access_key_secret": ACCESS_KEY_SECRET,
                "download_hosts": ["127.0.0.1"],
            },
        }
        secrets = self._aws.client("secretsmanager", endpoint_url=self._aws_endpoint)
        secrets.create_secret(Name=f"{SECRET_PREFIX}{SOURCE_ID}", SecretString=json.dumps(self._document))
        table = load_template(ROOT / "template.yaml")["Resources"]["LedgerTable"]["Properties"]
        self._aws.client("dynamodb", endpoint_url=self._aws_endpoint).create_table(
            TableName=LEDGER_TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=table["AttributeDefinitions"],
            KeySchema=table["KeySchema"],
            GlobalSecondaryIndexes=table["GlobalSecondaryIndexes"],
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._simulator.stop()

    def job(self, name: str, size: int, break_at: float = 0.0) -> str:
        """A fetch job (JSON, as on the queue) for a new call whose recording is the file server's
        file ``name`` of ``size`` bytes: made from the call's recording receipt by the provider's
        own parser."""
        call = self._simulator.place_call(duration_s=1, ready_after_s=0)
        assert call.key is not None
        self._links.route(call.key, file_path(name, size, call.key, break_at))
        source = parse_source(self._document)
        receipt = json.dumps([self._simulator.secret_recording(call)]).encode()
        request = InboundRequest(
            source_id=SOURCE_ID,
            body=receipt,
            headers={"content-type": "application/json"},
            query={},
            source_ip="127.0.0.1",
        )
        reply = source.provider.parse_webhook(source, request)
        (job,) = reply.jobs
        return job.to_json()

    def peer_settings(self) -> dict[str, str]:
        """What the callvault peer needs to build its Fetcher (the rest comes from the environment)."""
        return {"ledger_table": LEDGER_TABLE, "secret_prefix": SECRET_PREFIX}
