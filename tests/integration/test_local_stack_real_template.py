"""The local runtime starting the real template.yaml: its four functions, route, queue mappings
and schedules come up in moto with the core layer, and the webhook, reading only the
credential-free copies of the sources, authenticates every provider of local/sources.yaml.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from callvault.sources import webhook_document
from callvault.sources_file import load_sources_file
from callvault.webhook import signature
from local.emulator.stack import LocalStack
from tests.conftest import ROOT, sample_event

pytestmark = pytest.mark.integration


@pytest.mark.skipif(not (ROOT / "template.yaml").exists(), reason="template.yaml not written yet")
def test_real_template_runs_locally(tmp_path: Path) -> None:
    # Given the real template and the local sources file
    with LocalStack(
        ROOT / "template.yaml",
        sources_file=ROOT / "local" / "sources.yaml",
        state_file=tmp_path / "state.json",
        run_schedules=False,
    ) as stack:
        # Then the four functions run from their source directories with the core layer
        assert set(stack.functions) == {
            "WebhookFunction",
            "FetcherFunction",
            "PbxSessionKeeperFunction",
            "ReconcilerFunction",
        }
        for spec in stack.functions.values():
            assert spec.layer_dirs == (ROOT / "layers" / "callvault",)
        assert [(r.method, r.path) for r in stack.routes] == [("POST", "/webhooks/{source_id}")]
        assert sorted((m.function_id, m.batch_size, m.report_batch_item_failures) for m in stack.queue_mappings) == [
            ("FetcherFunction", 1, True),
            ("ReconcilerFunction", 1, True),
        ]
        assert sorted((s.function_id, s.interval_seconds) for s in stack.schedules) == [
            ("PbxSessionKeeperFunction", 300),
            ("ReconcilerFunction", 300),
        ]
        state = json.loads((tmp_path / "state.json").read_text())
        for key in ("bucket", "table", "queue_url", "dlq_url", "state_machine_arn", "alert_topic_arn"):
            assert state[key], key
        assert state["outputs"]["WebhookUrl"] == state["webhook_url_template"]
        # The functions the template gives the webhook's URL get the local one; the webhook does not
        assert stack.runner is not None
        assert stack.runner.environment_of("FetcherFunction")["WEBHOOK_BASE_URL"] == state["webhook_base_url"]
        assert "WEBHOOK_BASE_URL" not in stack.runner.environment_of("WebhookFunction")
        # No X-Ray daemon here: the handlers' Tracer is off
        assert stack.runner.environment_of("WebhookFunction")["POWERTOOLS_TRACE_DISABLED"] == "true"
        # The dashboard is set aside (it shows alarms, which moto does not create), the rest is there
        assert "DashboardUrl" not in state["outputs"] and state["outputs"]["AlertTopicArn"]
        # And the webhook answers from the real handler: a wrong token enqueues nothing
        url = state["webhook_url_template"].format(source_id="office-pbx")
        reply = requests.post(url, json={"action": "NewCdr"}, headers={"X-Webhook-Token": "wrong"}, timeout=10)
        assert reply.status_code == 403
        unknown = requests.post(state["webhook_url_template"].format(source_id="nobody"), json={}, timeout=10)
        assert unknown.status_code == 404
        assert_the_webhook_authenticates_every_provider_from_its_own_copies(stack)
        stack.wait_idle(10)
        assert not [i for i in stack.runner.invocations if i.function_id == "FetcherFunction"]  # type: ignore[union-attr]


# Per source of local/sources.yaml: an event the webhook acknowledges without a job, and its answer.
# (The CCC and Dypls answers name the instance or pool: read from the webhook's copy of the source.)
UNFETCHED_EVENTS = {
    "office-pbx": (sample_event("pbx/extension-status.json"), 200, {"status": "Success"}),
    "shop-ccc": ({"eventType": "CDRReady", "contactId": "1"}, 200, {"code": "OK", "message": "accepted", "jobs": 0}),
    "shop-ccc-2020": (
        {"eventType": "CDRReady", "contactId": "1"},
        200,
        {"code": "OK", "message": "accepted", "jobs": 0},
    ),
    "privacy-pool": (
        [{"pool_key": "FC000000", "call_id": "1"}],
        400,
        {"error": "record 0: record is for pool 'FC000000', this source is 'FC123456'"},
    ),
}


def assert_the_webhook_authenticates_every_provider_from_its_own_copies(stack: LocalStack) -> None:
    """The webhook reads only the credential-free copies of the sources, and with them alone
    authenticates and parses every provider's calls (the template's IAM enforces it in AWS)."""
    assert stack.runner is not None
    environment = stack.runner.environment_of("WebhookFunction")
    secrets = stack.client("secretsmanager")
    sources = {raw["id"]: raw for raw in load_sources_file(ROOT / "local" / "sources.yaml")}
    assert sorted(sources) == sorted(UNFETCHED_EVENTS)
    for source_id, raw in sources.items():
        provider = raw["provider"]
        read = secrets.get_secret_value(SecretId=environment["WEBHOOK_SECRET_PREFIX"] + source_id)
        copy = json.loads(read["SecretString"])
        assert copy == webhook_document(raw) and {"access_key_secret", "password"}.isdisjoint(copy[provider])

        event, status, answer = UNFETCHED_EVENTS[source_id]
        body = json.dumps(event).encode()
        url = stack.state["webhook_url_template"].format(source_id=source_id)
        headers = {"Content-Type": "application/json", "X-Webhook-Token": raw["webhook_token"]}
        if raw.get("webhook_signing_secret"):
            stamp = str(int(time.time()))
            signed = signature(raw["webhook_signing_secret"], stamp, body)
            headers |= {"X-Callvault-Timestamp": stamp, "X-Callvault-Signature": signed}
        missing = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
        wrong = requests.post(url, data=body, headers={**headers, "X-Webhook-Token": "wrong-token"}, timeout=10)
        reply = requests.post(url, data=body, headers=headers, timeout=10)
        assert (missing.status_code, wrong.status_code) == (401, 403), source_id
        assert (reply.status_code, reply.json()) == (status, answer), source_id
