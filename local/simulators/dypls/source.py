"""A Dyplsapi pool of the sources file, played by :class:`~local.simulators.dypls.DyplsSimulator`:
a call ends with a receipt batch pushed to the webhook."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Self

from local.simulation import READY_AFTER_S, ExpectedFile, on_loopback, port_of, with_token
from local.simulators.dypls import DyplsSimulator


class SimulatedDypls:
    provider = "dypls"
    demo_calls: tuple[float, ...] = (120.0, 45.0)

    def __init__(self, raw: Mapping[str, Any]) -> None:
        settings = raw["dypls"]
        self.source_id = str(raw["id"])
        self.token = str(raw["webhook_token"])
        self.simulator = DyplsSimulator(
            credentials={str(settings["access_key_id"]): str(settings["access_key_secret"])},
            pool_keys={str(settings.get("pool_key") or "FC123456")},
            port=port_of(str(settings["endpoint"])),
        )

    @classmethod
    def for_source(cls, raw: Mapping[str, Any]) -> Self | None:
        return cls(raw) if on_loopback(str((raw.get("dypls") or {}).get("endpoint", ""))) else None

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
