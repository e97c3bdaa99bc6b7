"""Shared fixtures: paths, sample events and source documents."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"


def sample_event(name: str) -> Any:
    """A sample event from events/ (the same files ops use with `sam local`-style tooling)."""
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def pbx_source_document(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": "office-pbx",
        "provider": "pbx",
        "webhook_token": "office-pbx-token-0123456789",
        "timezone": "Asia/Shanghai",
        # A name that never resolves: a test that forgot to point the source at its simulator fails
        # at once instead of reaching whatever listens on a fixed local port (make demo's PBX).
        "pbx": {"base_url": "http://pbx.invalid:8088", "username": "api", "password": "apipass"},
    }
    document.update(overrides)
    return document


def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """True once ``condition()`` holds. Simulators count a download after its last write, which
    the client can see before the server thread has counted it. (The timeout only bounds a
    failing test: on a busy machine that thread may wait seconds for its turn.)"""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def root() -> Path:
    return ROOT


def ccc_source_document(api_version: str = "2017-07-05", **overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": "shop-ccc",
        "provider": "ccc",
        "webhook_token": "shop-ccc-token-0123456789",
        "timezone": "Asia/Shanghai",
        "ccc": {
            "api_version": api_version,
            "instance_id": "9cfad875-6260-4a53-ab6e-b13e3fb31f7d" if api_version == "2017-07-05" else "ccc-test",
            "region": "cn-shanghai",
            "access_key_id": "LTAI-test-key",
            "access_key_secret": "test-secret",
        },
    }
    document.update(overrides)
    return document


def dypls_source_document(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": "privacy-pool",
        "provider": "dypls",
        "webhook_token": "privacy-pool-token-0123456789",
        "timezone": "Asia/Shanghai",
        "dypls": {"pool_key": "FC123456", "access_key_id": "LTAI-test-key", "access_key_secret": "test-secret"},
    }
    document.update(overrides)
    return document
