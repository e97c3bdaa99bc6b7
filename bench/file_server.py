"""The download side of the transfer benchmark: an HTTP file server in a process of its own.

``python -m bench.file_server`` binds an ephemeral loopback port, prints ``http://127.0.0.1:PORT``
on its first line of output and serves until its standard input closes (its parent ended).

``GET /files/{name}/{size}/{file}`` serves a generated file of ``size`` bytes
(``bench.generated_data``; nothing is held in memory) the way object storage does: 200 with
``Content-Length`` and ``Accept-Ranges: bytes``, or 206 with ``Content-Range`` for a satisfiable
``Range: bytes=a-b`` / ``bytes=a-`` / ``bytes=-n``. With ``?break_at=0.5`` the first GET of
``name`` promises the whole body and closes the connection after that fraction of it (a broken
transfer); later GETs of ``name`` are whole and honour ``Range``.

``GET /served/{name}`` answers ``{"bytes": …, "requests": …, "ranges": [...]}``: what was sent
for ``name`` so far. Bytes are counted before they are written, so once a client has read a
body, every byte of it is in the count (no race with the server's thread).
"""

from __future__ import annotations

import json
import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from bench.generated_data import byte_range

FILE_PATH = re.compile(r"^/files/([A-Za-z0-9_.-]+)/([0-9]+)/([A-Za-z0-9_.-]+)$")
SERVED_PATH = re.compile(r"^/served/([A-Za-z0-9_.-]+)$")
RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")


@dataclass
class Served:
    """What one file name was served so far."""

    bytes: int = 0
    requests: int = 0
    ranges: list[str] = field(default_factory=list)
    broken: bool = False


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FileRequestHandler)
        self.lock = threading.Lock()
        self.served: dict[str, Served] = {}

    def record(self, name: str) -> Served:
        with self.lock:
            return self.served.setdefault(name, Served())


class FileRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as object storage answers
    server: FileServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would cost more than serving it

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        served = SERVED_PATH.match(parts.path)
        if served:
            self._send_served(served.group(1))
            return
        match = FILE_PATH.match(parts.path)
        if not match:
            self._send_plain(404, "no such file")
            return
        name, size = match.group(1), int(match.group(2))
        break_at = float(parse_qs(parts.query).get("break_at", ["0"])[0])
        self._send_file(name, size, break_at)

    def _send_file(self, name: str, size: int, break_at: float) -> None:
        record = self.server.record(name)
        start, end = 0, size
        asked = self.headers.get("Range")
        wanted = _satisfiable(asked, size) if asked else None
        with self.server.lock:
            record.requests += 1
            record.ranges.append(asked or "")
            breaks = 0 < break_at < 1 and not record.broken
            record.broken = record.broken or breaks
        self.send_response(206 if wanted else 200)
        if wanted:
            start, end = wanted
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.send_header("Content-Type", "audio/mpeg")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        stop = start + int((end - start) * break_at) if breaks else end
        for piece in byte_range(start, stop):
            with self.server.lock:
                record.bytes += len(piece)
            self.wfile.write(piece)
        if breaks:
            # The body promised more: closing now is what the client sees as a broken transfer.
            self.close_connection = True

    def _send_served(self, name: str) -> None:
        record = self.server.record(name)
        with self.server.lock:
            body = {"bytes": record.bytes, "requests": record.requests, "ranges": list(record.ranges)}
        self._send_plain(200, json.dumps(body), "application/json")

    def _send_plain(self, status: int, text: str, content_type: str = "text/plain") -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def file_path(name: str, size: int, file_name: str = "recording.mp3", break_at: float = 0.0) -> str:
    """The path (and query) under which the server serves file ``name`` of ``size`` bytes."""
    query = f"?break_at={break_at}" if break_at else ""
    return f"/files/{name}/{size}/{file_name}{query}"


def _satisfiable(header: str, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of a ``Range`` this file can satisfy; None serves it whole (as OSS does)."""
    match = RANGE.match(header.strip())
    if not match or not (match.group(1) or match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if first:
        start, end = int(first), min(size, int(last) + 1) if last else size
    else:
        start, end = max(0, size - int(last)), size
    return (start, end) if start < end else None


def main() -> int:
    server = FileServer()
    threading.Thread(target=server.serve_forever, name="file-server", daemon=True).start()
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdin.read()  # returns when the parent closes our stdin (or ends)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
