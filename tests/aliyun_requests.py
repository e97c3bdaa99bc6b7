"""Requests to the Alibaba Cloud simulators (CCC, Dyplsapi) as their clients send them, over real HTTP.

Requests are signed with the vendor's own signer from ``aliyun-python-sdk-core`` (an oracle
independent of both the simulator and the project's client), with its Timestamp pinned to the
simulator's clock so ``advance_time`` does not make requests stale. Also here: reading what the
simulated OSS answers (XML errors, quote-wrapped URLs, file digests), the frozen-clock CCC
simulator the unit tests share, and ``Receiver``, a local endpoint for what the simulators push
(CCC events, Dyplsapi receipts).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

import requests
from aliyunsdkcore.auth.composer import rpc_signature_composer
from aliyunsdkcore.utils import parameter_helper

from local.simulators.aliyun.signature import iso_utc
from local.simulators.ccc import CccCall, CccSimulator
from local.simulators.dypls import DyplsSimulator

KEY_ID = "LTAI5tUnitTestKey0000001"
SECRET = "unit-test-secret"
CREDS = {KEY_ID: SECRET}
V2017, V2020, VDYPLS = "2017-07-05", "2020-07-01", "2017-05-25"
DAY = 86400.0


def sdk_signed_query(
    method: str,
    params: dict[str, str],
    *,
    timestamp: str,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    fmt: str = "JSON",
    body: dict[str, str] | None = None,
) -> str:
    """``/?...`` signed by the vendor SDK, with the Timestamp we choose."""
    with mock.patch.object(parameter_helper, "get_iso_8061_date", return_value=timestamp):
        url, _ = rpc_signature_composer.get_signed_url(dict(params), key_id, secret, fmt, method, body or {})
    return str(url)


def rpc(
    sim: CccSimulator | DyplsSimulator,
    action: str,
    version: str,
    *,
    method: str = "GET",
    fmt: str = "JSON",
    skew_s: float = 0.0,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    **params: Any,
) -> requests.Response:
    """Call ``action``: GET with everything in the query, or POST with business params in the form body."""
    common = {"Action": action, "Version": version}
    stamp = iso_utc(sim.now() + skew_s)
    if method == "GET":
        path = sdk_signed_query("GET", {**common, **params}, timestamp=stamp, key_id=key_id, secret=secret, fmt=fmt)
        return requests.get(sim.base_url + path, timeout=10)
    path = sdk_signed_query("POST", common, timestamp=stamp, key_id=key_id, secret=secret, fmt=fmt, body=params)
    return requests.post(sim.base_url + path, data=params, timeout=10)


def unquote_url(wrapped: str) -> str:
    """What a client does with the documented quote-wrapped ``SignatureUrl``."""
    return wrapped.strip("\"“”' ")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def xml_error(resp: requests.Response) -> dict[str, str]:
    root = ET.fromstring(resp.content)  # noqa: S314 - the reply of our own loopback simulator
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


def frozen_clock() -> Callable[[], float]:
    """A clock that moves only by ``advance_time``: expiry checks must not depend on how fast
    the machine runs the test (a link valid one day is checked one second before the day is up)."""
    start = float(int(time.time()))
    return lambda: start


def unit_ccc() -> CccSimulator:
    """The CCC simulator of the unit tests' ``ccc`` fixture: instance ``ccc-unit``, no wait for
    recordings, a frozen clock. (Start it with ``with``.)"""
    return CccSimulator(instance_id="ccc-unit", credentials=CREDS, not_ready_seconds=0, clock=frozen_clock())


def all_files(ccc: CccSimulator, call: CccCall) -> requests.Response:
    return rpc(ccc, "DownloadAllTypeRecording", V2017, ContactId=call.contact_id, InstanceId=ccc.instance_id)


class Receiver:
    """A local HTTP endpoint answering scripted ``(status, body, delay_s)`` replies, then 200 OK."""

    def __init__(self, script: list[tuple[int, bytes, float]] | None = None) -> None:
        self.script = list(script or [])
        self.bodies: list[Any] = []
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.bodies.append(json.loads(data.decode("utf-8")))
                owner.headers.append(dict(self.headers))
                status, body, delay = owner.script.pop(0) if owner.script else (200, b'{"code":0,"msg":"ok"}', 0.0)
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/receipts?token=t0k"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
