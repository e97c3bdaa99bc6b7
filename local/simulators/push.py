"""How a simulated provider pushes to a customer's URL: one POST, its outcome recorded, never raised.

The PBX's NewCdr reports, CCC's event notifications and Dyplsapi's receipt batches all go out
this way; each simulator decides from the outcome whether the push counts and when to retry.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PushOutcome", "post"]


@dataclass(frozen=True)
class PushOutcome:
    """What one POST got: ``status`` None (and ``error`` set) when no HTTP answer came."""

    status: int | None
    error: str | None
    reply: bytes
    latency_s: float


def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> PushOutcome:
    """POST ``body`` to ``url`` once and report what happened (an HTTP error status is an outcome)."""
    req = urllib.request.Request(  # noqa: S310 - URL chosen by the logged-in client, test or local stack
        url, data=body, method="POST", headers=dict(headers)
    )
    status: int | None = None
    error: str | None = None
    reply = b""
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
            reply = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        status, error = exc.code, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return PushOutcome(status, error, reply, time.perf_counter() - t0)
