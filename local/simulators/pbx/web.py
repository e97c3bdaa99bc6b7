"""The PBX's web server around its API: CORS headers on every reply, raw spaces accepted in a
request target, no HEAD, and how it would serve a byte range (when the simulator honours them)."""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from local.simulators.base import SimRequestHandler

__all__ = ["CORS", "PbxRequestHandler", "byte_range"]

# Headers the seed's example replies carry.
CORS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS, PUT, DELETE"),
)


class PbxRequestHandler(SimRequestHandler):
    """The PBX web server: CORS headers on every reply, raw spaces in request targets, no HEAD."""

    EXTRA_HEADERS = CORS

    def parse_request(self) -> bool:
        # The seed's CDR link has raw spaces in the query ("starttime=2020-05-01 00:00:00");
        # http.server would reject that request line, so percent-encode the target first.
        raw: bytes = getattr(self, "raw_requestline", b"")  # set by handle_one_request (untyped in typeshed)
        line = raw.decode("iso-8859-1").rstrip("\r\n")
        words = line.split(" ")
        if len(words) > 3 and words[-1].startswith("HTTP/"):
            target = " ".join(words[1:-1]).replace(" ", "%20")
            self.raw_requestline = f"{words[0]} {target} {words[-1]}\r\n".encode("iso-8859-1")
        return super().parse_request()

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header on the wall clock: the simulated one only drives calls and expiries."""
        return BaseHTTPRequestHandler.date_time_string(self, timestamp)

    def do_HEAD(self) -> None:
        """Refuse a HEAD as a server without the method does (never counted as a request)."""
        self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({self.command!r})")

    def do_OPTIONS(self) -> None:
        """Answer a CORS pre-flight (never counted as a request)."""
        self.send_response(200)
        for name, value in CORS:
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_json(self, obj: dict[str, Any]) -> None:
        """Send an HTTP 200 JSON reply (the PBX answers 200 even for failures)."""
        self.send_bytes(200, json.dumps(obj).encode("utf-8"), "application/json; charset=utf-8")


_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str, size: int) -> tuple[int, int, int] | None:
    """(start, end exclusive, status) for a single byte range as RFC 9110 serves it: a malformed
    header is ignored (200, all of it), an unsatisfiable range is None (416)."""
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None or not (match.group(1) or match.group(2)):
        return (0, size, 200)
    if match.group(1):
        first = int(match.group(1))
        last = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        if match.group(2) and int(match.group(2)) < first:
            return (0, size, 200)
    else:
        first, last = max(0, size - int(match.group(2))), size - 1
        if int(match.group(2)) == 0:
            return None
    if first >= size:
        return None
    return (first, last + 1, 206)
