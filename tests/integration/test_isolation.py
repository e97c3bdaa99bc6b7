"""Execution environments are isolated like Lambda's: concurrent invocations never share state.

In Lambda every execution environment is its own process with its own imports and environment
variables, running one invocation at a time. The local runtime must be the same, or a module
global (Powertools' resolver keeps the current event on a class) lets one request be handled
with another's body, token or source.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import yaml

from local.emulator.stack import LocalStack
from local.simulation import with_token
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

SOURCES = ("iso-a", "iso-b")
REQUESTS_PER_SOURCE = 40


def source(source_id: str) -> dict[str, Any]:
    access = {"access_key_id": "LTAI-iso", "access_key_secret": "iso-secret", "endpoint": "http://127.0.0.1:9"}
    return {
        "id": source_id,
        "provider": "dypls",
        "webhook_token": f"{source_id}-token-{uuid.uuid4().hex}",
        "timezone": "Asia/Shanghai",
        "reconcile": {"enabled": False},
        "dypls": {"pool_key": f"FC-{source_id}", **access},
    }


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, dict[str, dict[str, Any]]]]:
    work = tmp_path_factory.mktemp("isolation")
    documents = {source_id: source(source_id) for source_id in SOURCES}
    (work / "sources.yaml").write_text(yaml.safe_dump({"sources": list(documents.values())}))
    with LocalStack(
        ROOT / "template.yaml",
        sources_file=work / "sources.yaml",
        state_file=work / "state.json",
        run_schedules=False,
        concurrency=4,
    ) as stack:
        yield stack, documents


def unanswered_call_report(pool_key: str, call_id: str) -> dict[str, Any]:
    """A call-ended receipt of a call nobody answered: the fetcher only notes NO_RECORDING."""
    return {
        "pool_key": pool_key,
        "sub_id": 1000000820257625,
        "call_id": call_id,
        "phone_no": "13800138000",
        "secret_no": "17000000000",
        "peer_no": "13900139000",
        "call_type": 0,
        "call_time": "2026-12-01 10:14:28",
        "start_time": "2026-12-01 10:14:35",
        "release_time": "2026-12-01 10:14:35",
        "release_dir": 1,
        "release_cause": 19,
    }


def test_concurrent_webhook_requests_of_two_sources_never_cross(
    isolated: tuple[LocalStack, dict[str, dict[str, Any]]],
) -> None:
    stack, documents = isolated
    webhook = str(stack.state["webhook_url_template"])
    calls = [(source_id, f"{source_id}-{n}") for n in range(REQUESTS_PER_SOURCE) for source_id in SOURCES]
    start = threading.Barrier(16)

    def push(source_id: str, call_id: str) -> requests.Response:
        document = documents[source_id]
        url = with_token(webhook.format(source_id=source_id), document["webhook_token"])
        body = json.dumps([unanswered_call_report(document["dypls"]["pool_key"], call_id)])
        if int(call_id.rsplit("-", 1)[1]) < 16:
            start.wait()  # the first requests of both sources leave at the same moment
        return requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)

    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(lambda call: push(*call), calls))

    # Every request is answered as its own source's, never with another's token or body
    assert [(r.status_code, r.json()) for r in replies] == [(200, {"code": 0, "msg": "接收成功"})] * len(calls)
    stack.wait_idle(60)
    table = stack.client("dynamodb")
    for source_id, call_id in calls:
        key = {"pk": {"S": f"CALL#{source_id}#{call_id}"}, "sk": {"S": "FILE#*"}}
        item = table.get_item(TableName=stack.state["table"], Key=key, ConsistentRead=True).get("Item")
        assert item is not None and item["status"]["S"] == "NO_RECORDING", (source_id, call_id)
