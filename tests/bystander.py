"""A loopback HTTP server nobody should reach: where a refused redirect or link would have led.

It records every request it gets (method, path with query, body) and answers 200 with bytes
that pass for audio, so a client that did follow would archive them and the test would see
it. A followed request is handled before the client gets its answer, so once the client's
call has returned, an empty ``requests`` list means nothing was sent here: no waiting needed.
"""

from __future__ import annotations

from typing import ClassVar

from local.simulators.base import LoopbackHttpSimulator, SimRequestHandler

Request = tuple[str, str, bytes]
DECOY_AUDIO = b"RIFF" + bytes(1020)


class Bystander(LoopbackHttpSimulator[Request]):
    THREAD_NAME: ClassVar[str] = "bystander"

    @property
    def requests(self) -> list[Request]:
        """Every request received so far."""
        return self.request_log

    def _handle(self, h: SimRequestHandler, method: str) -> None:
        h.read_body()
        self._log_request((method, h.path, h.body_bytes))
        h.send_bytes(200, DECOY_AUDIO, "audio/x-wav")
