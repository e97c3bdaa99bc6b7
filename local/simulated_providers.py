"""Provider simulators for the sources of a local sources file, and the calls they make.

Every source whose provider address is on loopback (a PBX ``base_url``, a CCC or Dypls
``endpoint``) gets a simulator listening there with that source's credentials, so the sources
file alone describes the local world (the same file format registers real sources in AWS).

``SimulatedSource.place_call`` makes a call end the way the real provider reports it: the PBX
pushes NewCdr by itself (to the URL registered at login), a CCC 2017 call is forwarded like a
customer's softphone forwarder would (signed when the source wants signatures), CCC 2020
pushes its RecordingReady events, Dyplsapi pushes a receipt batch. With ``lose_push`` the
report goes missing the way it does in real life (the PBX does not push, the forwarder's tab
closed, RecordingReady or the recording receipt never comes): only reconciliation can find the
recording then. It returns the files the archive should end up with.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from local.simulators.ccc import CccFile, CccSimulator
from local.simulators.dypls import DyplsSimulator
from local.simulators.pbx import PbxSimulator, make_self_signed

# Locally recordings become ready after a moment, not after the vendors' minutes.
READY_AFTER_S = 1.0


@dataclass(frozen=True)
class ExpectedFile:
    """A recording the archive should end up with. ``file_name`` None: named by the provider's link."""

    call_id: str
    file_name: str | None
    size: int
    sha256: str


class Simulator(Protocol):
    @property
    def base_url(self) -> str: ...

    def start(self) -> Any: ...

    def stop(self) -> None: ...


class SimulatedSource(Protocol):
    source_id: str
    provider: str

    @property
    def simulator(self) -> Simulator: ...

    def place_call(self, webhook_url: str, duration_s: float, *, lose_push: bool = False) -> list[ExpectedFile]: ...


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def with_token(webhook_url: str, token: str) -> str:
    """The webhook URL as a provider that cannot send headers is given it."""
    return f"{webhook_url}?token={quote(token, safe='')}"


class SimulatedPbx:
    provider = "pbx"

    def __init__(self, raw: Mapping[str, Any]) -> None:
        settings = raw["pbx"]
        url = str(settings["base_url"])
        tls = None
        if url.startswith("https"):
            tls = make_self_signed(tempfile.mkdtemp(prefix="callvault-pbx-tls-"), urlsplit(url).hostname or "")
        self.source_id = str(raw["id"])
        self.simulator = PbxSimulator(
            username=str(settings["username"]),
            password=str(settings["password"]),
            host=urlsplit(url).hostname or "127.0.0.1",
            port=_port(url),
            tz=ZoneInfo(str(raw.get("timezone", "UTC"))),
            tls=tls,
        )

    def place_call(self, webhook_url: str, duration_s: float, *, lose_push: bool = False) -> list[ExpectedFile]:
        # The PBX pushes NewCdr itself, to the URL the session keeper registered at login.
        call = self.simulator.place_call(duration_s=duration_s, channels=2, push=not lose_push)
        assert call.recording and call.sha256
        return [ExpectedFile(call.callid, call.recording, call.size, call.sha256)]


class SimulatedCcc:
    provider = "ccc"

    def __init__(self, raw: Mapping[str, Any]) -> None:
        settings = raw["ccc"]
        self.source_id = str(raw["id"])
        self.token = str(raw["webhook_token"])
        self.signing_secret = raw.get("webhook_signing_secret")
        self.api_version = str(settings.get("api_version", "2017-07-05"))
        self.simulator = CccSimulator(
            instance_id=str(settings["instance_id"]),
            credentials={str(settings["access_key_id"]): str(settings["access_key_secret"])},
            port=_port(str(settings["endpoint"])),
        )

    def place_call(self, webhook_url: str, duration_s: float, *, lose_push: bool = False) -> list[ExpectedFile]:
        call = self.simulator.place_call(transferred_legs=1, duration_s=duration_s, ready_after_s=READY_AFTER_S)
        time.sleep(READY_AFTER_S)
        files: tuple[CccFile, ...]
        if self.api_version == "2020-07-01":
            lost = {"RecordingReady"} if lose_push else set()
            for event_type in ("RecordingReady", "DualTrackRecordingReady"):
                if event_type not in lost:
                    self.simulator.push_event(call, event_type, url=with_token(webhook_url, self.token))
            files = (call.mono, call.multi_channel)
        else:
            if not lose_push:  # else the agent's tab closed before the forwarder ran
                self._forward({"contactId": call.contact_id, "callTime": int(call.start * 1000)}, webhook_url)
            files = call.files
        return [ExpectedFile(call.contact_id, f.file_name, f.size, f.sha256) for f in files]

    def _forward(self, event: dict[str, Any], webhook_url: str) -> None:
        """What a customer's forwarder does (the scheme of docs/sources.md, written out again)."""
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", "X-Webhook-Token": self.token}
        if self.signing_secret:
            stamp = str(int(time.time()))
            mac = hmac.new(str(self.signing_secret).encode(), stamp.encode() + b"." + body, hashlib.sha256)
            headers |= {"X-Callvault-Timestamp": stamp, "X-Callvault-Signature": f"v1={mac.hexdigest()}"}
        request = urllib.request.Request(webhook_url, body, headers, method="POST")  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310
            reply.read()


class SimulatedDypls:
    provider = "dypls"

    def __init__(self, raw: Mapping[str, Any]) -> None:
        settings = raw["dypls"]
        self.source_id = str(raw["id"])
        self.token = str(raw["webhook_token"])
        self.simulator = DyplsSimulator(
            credentials={str(settings["access_key_id"]): str(settings["access_key_secret"])},
            pool_keys={str(settings.get("pool_key") or "FC123456")},
            port=_port(str(settings["endpoint"])),
        )

    def place_call(self, webhook_url: str, duration_s: float, *, lose_push: bool = False) -> list[ExpectedFile]:
        call = self.simulator.place_call(duration_s=duration_s, ready_after_s=READY_AFTER_S)
        time.sleep(READY_AFTER_S)
        # One batch, as the platform sends them: the call-ended report and the recording receipt
        # (which the platform drops after three failed re-sends: lost here at once).
        records = [self.simulator.secret_report(call)]
        if not lose_push:
            records.append(self.simulator.secret_recording(call))
        self.simulator.push_receipts(with_token(webhook_url, self.token), records)
        assert call.sha256
        return [ExpectedFile(call.call_id, None, call.size, call.sha256)]


def _simulation_for(raw: Mapping[str, Any]) -> SimulatedSource | None:
    provider = raw.get("provider")
    settings = raw.get(str(provider)) or {}
    if provider == "pbx" and _is_loopback(str(settings.get("base_url", ""))) and "password" in settings:
        return SimulatedPbx(raw)
    if provider == "ccc" and _is_loopback(str(settings.get("endpoint", ""))):
        return SimulatedCcc(raw)
    if provider == "dypls" and _is_loopback(str(settings.get("endpoint", ""))):
        return SimulatedDypls(raw)
    return None  # a real provider (or only an md5 known): nothing to simulate


def start_simulators(sources: Iterable[Mapping[str, Any]]) -> dict[str, SimulatedSource]:
    """Start one simulator per loopback source; returns them by source id."""
    started: dict[str, SimulatedSource] = {}
    try:
        for raw in sources:
            simulation = _simulation_for(raw)
            if simulation is not None:
                simulation.simulator.start()
                started[simulation.source_id] = simulation
    except BaseException:
        stop_simulators(started)
        raise
    return started


def stop_simulators(simulations: Mapping[str, SimulatedSource]) -> None:
    for simulation in simulations.values():
        simulation.simulator.stop()
