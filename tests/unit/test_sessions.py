"""The session keeper keeps every PBX's session at once: one PBX that hangs cannot stop the others'.

Real HTTP against PBX simulators; sources read from Secrets Manager (moto, in process).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from callvault.http import HttpClients
from callvault.providers.interface import ProviderRuntime
from callvault.register import secret_prefix, webhook_secret_prefix
from callvault.sessions import SessionKeepingFailed, keep_sessions
from callvault.sources import SourceDirectory
from callvault.sources_file import publish_sources
from local.simulators.pbx import PbxSimulator
from tests.conftest import dypls_source_document, pbx_source_document

WEBHOOK_BASE_URL = "https://hooks.example.com"
LONG = 60.0  # seconds a test lets the pass wait: never reached when it passes


class SessionStore:
    """ProviderState's interface in memory, safe across the keeper's worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, source_id: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            item = self.items.get((source_id, name))
            return dict(item) if item else None

    def put(self, source_id: str, name: str, values: dict[str, Any]) -> None:
        with self._lock:
            self.items[(source_id, name)] = dict(values)

    def delete_if(self, source_id: str, name: str, attribute: str, expected: str) -> None:
        with self._lock:
            if (self.items.get((source_id, name)) or {}).get(attribute) == expected:
                del self.items[(source_id, name)]


def pbx_source(source_id: str, simulator: PbxSimulator) -> dict[str, Any]:
    section = {"base_url": simulator.base_url, "username": "api", "password": "apipass"}
    return pbx_source_document(id=source_id, webhook_token=f"{source_id}-token-0123456789", pbx=section)


@pytest.fixture
def simulators() -> Iterator[tuple[PbxSimulator, PbxSimulator]]:
    with PbxSimulator() as healthy, PbxSimulator() as hanging:
        yield healthy, hanging


@pytest.fixture
def directory(monkeypatch: pytest.MonkeyPatch, simulators: tuple[PbxSimulator, PbxSimulator]) -> Iterator[Any]:
    healthy, hanging = simulators
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        secrets = boto3.client("secretsmanager", region_name="us-east-1")
        # A Dypls pool too: it keeps no session and must simply be left out.
        sources = [pbx_source("hanging-pbx", hanging), pbx_source("healthy-pbx", healthy), dypls_source_document()]
        publish_sources(sources, secrets, secret_prefix("dev"), webhook_secret_prefix("dev"))
        yield SourceDirectory(secrets, secret_prefix("dev"))


def test_every_pbx_session_is_kept(simulators: tuple[PbxSimulator, PbxSimulator], directory: Any) -> None:
    state = SessionStore()
    runtime = ProviderRuntime(http=HttpClients(), state=state, webhook_base_url=WEBHOOK_BASE_URL)  # type: ignore[arg-type]

    assert keep_sessions(directory, runtime, time_left=lambda: LONG) == {"hanging-pbx": "login", "healthy-pbx": "login"}
    assert keep_sessions(directory, runtime, time_left=lambda: LONG) == {
        "hanging-pbx": "heartbeat",
        "healthy-pbx": "heartbeat",
    }
    for simulator in simulators:
        assert simulator.report_url is not None and simulator.report_url.startswith(WEBHOOK_BASE_URL)


def test_a_hanging_pbx_does_not_stop_the_others_sessions(
    simulators: tuple[PbxSimulator, PbxSimulator], directory: Any
) -> None:
    healthy, hanging = simulators
    state = SessionStore()
    runtime = ProviderRuntime(http=HttpClients(), state=state, webhook_base_url=WEBHOOK_BASE_URL)  # type: ignore[arg-type]
    # Given a PBX that accepts connections and never answers
    hanging.hang()

    def time_left() -> float:
        # The function's time runs out as soon as the healthy PBX's session is kept (whatever the
        # machine's speed): the hanging PBX has not answered by then, and never will.
        return 0.0 if state.get("healthy-pbx", "pbx-session") else LONG

    try:
        # When the session keeper runs
        with pytest.raises(SessionKeepingFailed) as failed:
            keep_sessions(directory, runtime, time_left=time_left)

        # Then the healthy PBX's session is kept and the hanging one is reported, by name
        assert healthy.report_url is not None and "/webhooks/healthy-pbx?token=" in healthy.report_url
        assert str(failed.value) == (
            "hanging-pbx: no answer before the session keeper's deadline (the PBX accepts but does not reply)"
        )
        assert state.get("hanging-pbx", "pbx-session") is None
    finally:
        hanging.release()


def test_a_rotated_webhook_token_opens_a_session_that_pushes_with_the_new_one(
    simulators: tuple[PbxSimulator, PbxSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    pbx, _ = simulators
    state = SessionStore()
    runtime = ProviderRuntime(http=HttpClients(), state=state, webhook_base_url=WEBHOOK_BASE_URL)  # type: ignore[arg-type]
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        secrets = boto3.client("secretsmanager", region_name="us-east-1")

        def register(source: dict[str, Any]) -> SourceDirectory:
            publish_sources([source], secrets, secret_prefix("dev"), webhook_secret_prefix("dev"))
            return SourceDirectory(secrets, secret_prefix("dev"), ttl_seconds=0)

        source = pbx_source("office-pbx", pbx)
        assert keep_sessions(register(source), runtime, time_left=lambda: LONG) == {"office-pbx": "login"}
        old_token = pbx.live_tokens[0]

        # Given the operator registers the source with a new webhook token
        directory = register(source | {"webhook_token": "office-pbx-rotated-9876543210"})

        # When the session keeper runs
        done = keep_sessions(directory, runtime, time_left=lambda: LONG)

        # Then the PBX pushes with the new token, and the session with the old one is closed
        assert done == {"office-pbx": "re-login (report URL changed)"}
        assert pbx.report_url is not None and pbx.report_url.endswith("?token=office-pbx-rotated-9876543210")
        assert old_token not in pbx.live_tokens
        assert keep_sessions(directory, runtime, time_left=lambda: LONG) == {"office-pbx": "heartbeat"}
