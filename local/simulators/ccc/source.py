"""A CCC source of the sources file, played by :class:`~local.simulators.ccc.CccSimulator`: calls
are forwarded like a customer's softphone forwarder does (2017-07-05) or pushed as recording
events (2020-07-01)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.request
from collections.abc import Mapping
from typing import Any, Self

from local.simulation import READY_AFTER_S, ExpectedFile, on_loopback, port_of, with_token
from local.simulators.ccc import CccFile, CccSimulator


class SimulatedCcc:
    provider = "ccc"
    demo_calls: tuple[float, ...] = (60.0, 35.0)

    def __init__(self, raw: Mapping[str, Any]) -> None:
        settings = raw["ccc"]
        self.source_id = str(raw["id"])
        self.token = str(raw["webhook_token"])
        self.signing_secret = raw.get("webhook_signing_secret")
        self.api_version = str(settings.get("api_version", "2017-07-05"))
        self.simulator = CccSimulator(
            instance_id=str(settings["instance_id"]),
            credentials={str(settings["access_key_id"]): str(settings["access_key_secret"])},
            port=port_of(str(settings["endpoint"])),
        )

    @classmethod
    def for_source(cls, raw: Mapping[str, Any]) -> Self | None:
        return cls(raw) if on_loopback(str((raw.get("ccc") or {}).get("endpoint", ""))) else None

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
