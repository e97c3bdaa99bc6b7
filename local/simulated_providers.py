"""Provider simulators for the sources of a local sources file.

Every PBX source whose ``base_url`` is on loopback gets a PBX simulator listening there,
with that source's credentials and time zone, so the sources file alone describes the
local world (the same file format that registers real PBXs in AWS).
"""

from __future__ import annotations

import ipaddress
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from local.simulators.pbx import PbxSimulator, make_self_signed


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start_pbx_simulators(sources: Iterable[Mapping[str, Any]]) -> dict[str, PbxSimulator]:
    """Start one simulator per loopback PBX source; returns them by source id."""
    started: dict[str, PbxSimulator] = {}
    try:
        for raw in sources:
            if raw.get("provider") != "pbx":
                continue
            settings = raw["pbx"]
            url = urlsplit(str(settings["base_url"]))
            if not url.hostname or not _is_loopback(url.hostname) or "password" not in settings:
                continue  # a real PBX (or only an md5 known): nothing to simulate
            tls = None
            if url.scheme == "https":
                tls = make_self_signed(tempfile.mkdtemp(prefix="callvault-pbx-tls-"), url.hostname)
            simulator = PbxSimulator(
                username=str(settings["username"]),
                password=str(settings["password"]),
                host=url.hostname,
                port=url.port or (443 if url.scheme == "https" else 80),
                tz=ZoneInfo(str(raw.get("timezone", "UTC"))),
                tls=tls,
            )
            started[str(raw["id"])] = simulator.start()
    except BaseException:
        for simulator in started.values():
            simulator.stop()
        raise
    return started
