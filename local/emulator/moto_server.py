"""moto in server mode as the local AWS, made atomic where callvault relies on DynamoDB being so.

:class:`MotoAws` runs moto's server on a loopback port: every boto3 client of the process, and
moto's own Step Functions interpreter, talk to it.

moto's DynamoDB item operations are serialised by a patch, because moto checks a
ConditionExpression and then writes without a lock: two concurrent conditional writes could both
succeed, and the ledger's claim (one download per recording) relies on that never happening.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

import requests

from local.emulator.errors import LocalStackError

LOG = logging.getLogger("local.emulator.moto_server")

DEFAULT_REGION = "us-east-1"
# moto's default account: the one every ARN of the local stack names.
DEFAULT_ACCOUNT = "123456789012"


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
        serves (see :func:`local.emulator.moto_plan.install_state_machines`).
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
    """Silence moto's per-request and per-resource chatter; ``moto_plan.unsupported_types`` reports once."""
    # werkzeug logs every moto request at INFO, which drowns the handlers' own logs.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto_logger = logging.getLogger("moto")
    if not any(isinstance(f, _DropUnsupportedResourceNotes) for f in moto_logger.filters):
        moto_logger.addFilter(_DropUnsupportedResourceNotes())
    warnings.filterwarnings("ignore", message=r"Tried to parse .* not supported by moto", category=UserWarning)
