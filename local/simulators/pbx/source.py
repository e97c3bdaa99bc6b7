"""A PBX source of the sources file, played by :class:`~local.simulators.pbx.PbxSimulator`."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from typing import Any, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from local.simulation import ExpectedFile, on_loopback, port_of
from local.simulators.pbx import PbxSimulator, make_self_signed


class SimulatedPbx:
    provider = "pbx"
    # Stereo 8 kHz 16-bit recordings of 3 to 7.4 MB.
    demo_calls: tuple[float, ...] = (95.0, 140.0, 230.0)

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
            port=port_of(url),
            tz=ZoneInfo(str(raw.get("timezone", "UTC"))),
            tls=tls,
        )

    @classmethod
    def for_source(cls, raw: Mapping[str, Any]) -> Self | None:
        settings = raw.get("pbx") or {}
        # Only a plain password lets the simulator check logins (an md5 alone cannot be reversed).
        return cls(raw) if on_loopback(str(settings.get("base_url", ""))) and "password" in settings else None

    def place_call(self, webhook_url: str, duration_s: float, *, lose_push: bool = False) -> list[ExpectedFile]:
        # The PBX pushes NewCdr itself, to the URL the session keeper registered at login.
        call = self.simulator.place_call(duration_s=duration_s, channels=2, push=not lose_push)
        assert call.recording and call.sha256
        return [ExpectedFile(call.callid, call.recording, call.size, call.sha256)]
