"""The loopback HTTP server every provider simulator runs on.

One :class:`LoopbackHttpSimulator` gives a simulator what it needs around its own protocol:
a ``ThreadingHTTPServer`` on loopback (HTTPS when the simulator hands out a TLS context) in
a background thread, start/stop and ``with`` support, a simulated clock that tests move
forward instead of sleeping, a book of faults armed for the next N requests, counters and a
request log.  A simulator implements :meth:`LoopbackHttpSimulator._handle` and speaks to the
client through :class:`SimRequestHandler` (capped body reads, complete replies).
"""

from __future__ import annotations

import contextlib
import email.utils
import re
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar, cast

__all__ = ["BREAKS", "MAX_BODY", "LoopbackHttpSimulator", "SimRequestHandler"]

#: Largest request body a simulator reads; anything bigger is refused and the connection closed.
MAX_BODY = 1024 * 1024
#: What a ``redirect`` fault may answer with.
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
#: How a ``truncate`` fault breaks a body off: a clean close (FIN) after the bytes sent, a
#: connection reset (RST), or a stall (nothing more is sent until the simulator stops or
#: :meth:`LoopbackHttpSimulator.release_stalls`, so the client's read timeout decides).
BREAKS = ("close", "reset", "stall")

LogEntry = TypeVar("LogEntry")


@dataclass
class _Fault:
    remaining: int
    params: dict[str, Any] = field(default_factory=dict)


class _FaultBook:
    """Armed faults: ``kind -> remaining count + parameters``; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, _Fault] = {}

    def arm(self, kind: str, count: int, params: dict[str, Any]) -> None:
        with self._lock:
            if count <= 0:
                self._faults.pop(kind, None)
            else:
                self._faults[kind] = _Fault(count, params)

    def take(self, kind: str, matches: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any] | None:
        """Consume one occurrence of ``kind`` if armed (and ``matches`` its params)."""
        with self._lock:
            fault = self._faults.get(kind)
            if fault is None or (matches is not None and not matches(fault.params)):
                return None
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self._faults[kind]
            return dict(fault.params)

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {k: f.remaining for k, f in self._faults.items()}

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


class _LoopbackServer(ThreadingHTTPServer):
    """Threading server that does any TLS handshake in the worker thread.

    Wrapping the listening socket would handshake inside ``accept`` and let one silent
    client block every other connection.
    """

    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 overflows when a test's clients connect at once; the kernel then
    # drops SYNs and each dropped client waits ~1 s for its retransmit.
    request_queue_size = 128

    def __init__(
        self, addr: tuple[str, int], owner: LoopbackHttpSimulator[Any], ssl_context: ssl.SSLContext | None
    ) -> None:
        self.owner = owner
        self.ssl_context = ssl_context
        super().__init__(addr, owner.HANDLER)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        sock = cast(socket.socket, request)
        sock.settimeout(10)
        try:
            tls_sock = self.ssl_context.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls_sock, client_address)
        finally:
            # wrap_socket detached the raw socket, so socketserver cannot close this one.
            with contextlib.suppress(OSError):
                tls_sock.shutdown(socket.SHUT_RDWR)
            tls_sock.close()


class SimRequestHandler(BaseHTTPRequestHandler):
    """Hands every request to the owning simulator's :meth:`LoopbackHttpSimulator._handle`."""

    protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections to these endpoints
    timeout = 30  # idle keep-alive connections must not pin threads forever
    # Headers and body go out in separate writes; with Nagle on, delayed ACKs add ~40 ms a reply.
    disable_nagle_algorithm = True
    #: Headers every reply of :meth:`send_bytes` carries, before its own.
    EXTRA_HEADERS: tuple[tuple[str, str], ...] = ()
    body_bytes: bytes = b""

    def log_message(self, format: str, *args: Any) -> None:
        # The simulators keep their own request logs (without secrets).
        return

    def _owner(self) -> LoopbackHttpSimulator[Any]:
        return cast(_LoopbackServer, self.server).owner

    def version_string(self) -> str:
        """The ``Server`` header of the simulated vendor."""
        return self._owner().SERVER_HEADER

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header, on the simulated clock."""
        return email.utils.formatdate(self._owner().now() if timestamp is None else timestamp, usegmt=True)

    def do_GET(self) -> None:
        """Dispatch a GET."""
        self._owner()._serve(self, "GET")

    def do_HEAD(self) -> None:
        """Dispatch a HEAD."""
        self._owner()._serve(self, "HEAD")

    def do_POST(self) -> None:
        """Dispatch a POST."""
        self._owner()._serve(self, "POST")

    def do_PUT(self) -> None:
        """Dispatch a PUT."""
        self._owner()._serve(self, "PUT")

    def do_DELETE(self) -> None:
        """Dispatch a DELETE."""
        self._owner()._serve(self, "DELETE")

    def read_body(self) -> bool:
        """Read the Content-Length body into ``body_bytes``; False (and close) if unusable.

        Read before any validation so an early error reply cannot leave body bytes in the
        stream of a keep-alive connection.  Chunked bodies are not supported.
        """
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            return False
        self.body_bytes = self.rfile.read(length) if length else b""
        return True

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra: Iterable[tuple[str, str]] = (),
        *,
        head: bool = False,
    ) -> None:
        """Send a complete reply (headers only for HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", "0" if head else str(len(body)))
        for name, value in (*self.EXTRA_HEADERS, *extra):
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


class LoopbackHttpSimulator(Generic[LogEntry]):
    """Lifecycle, simulated clock, faults, counters and request log of a provider simulator.

    Subclasses implement :meth:`_handle`, list their fault kinds in ``FAULT_KINDS`` (with the
    parameters each takes in ``FAULT_PARAMS``) and may swap in their own ``HANDLER``.
    ``LogEntry`` is what one line of their :attr:`request_log` holds.
    """

    FAULT_KINDS: ClassVar[tuple[str, ...]] = ()
    FAULT_PARAMS: ClassVar[Mapping[str, frozenset[str]]] = {}
    #: Counters that exist (at 0) before anything happened.
    COUNTERS: ClassVar[tuple[str, ...]] = ()
    THREAD_NAME: ClassVar[str] = "loopback-sim"
    SERVER_HEADER: ClassVar[str] = "Tengine"
    HANDLER: ClassVar[type[SimRequestHandler]] = SimRequestHandler

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        request_log_size: int = 10000,
    ) -> None:
        """Configure; nothing listens until :meth:`start`.  ``clock`` returns epoch seconds."""
        self.host = host
        self.port = port
        self._clock = clock
        self._offset = 0.0
        self._lock = threading.RLock()
        self._faults = _FaultBook()
        self._counters: dict[str, int] = dict.fromkeys(self.COUNTERS, 0)
        self._request_log: deque[LogEntry] = deque(maxlen=request_log_size)
        self._companions: list[LoopbackHttpSimulator[Any]] = []
        self._server: _LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        self._answering = threading.Event()
        self._answering.set()
        self._holding = 0
        self._stalls_released = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start the companion servers, then bind and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        self._stalls_released.clear()
        for companion in self._companions:
            companion.start()
        self._server = _LoopbackServer((self.host, self.port), self, self._tls_context())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.THREAD_NAME, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release held requests and stalled bodies, stop serving, then stop the companion servers."""
        self.release()
        self.release_stalls()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for companion in self._companions:
            companion.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self._server.ssl_context else 'http'}://{host}:{self.port}"

    def _serve_alongside(self, companion: LoopbackHttpSimulator[Any]) -> None:
        """Start and stop ``companion`` (e.g. the file server behind download URLs) with this one."""
        self._companions.append(companion)

    def _tls_context(self) -> ssl.SSLContext | None:
        """The server-side TLS context for HTTPS, or None for plain HTTP."""
        return None

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        """Simulated epoch seconds: the injected clock plus :meth:`advance_time` offsets."""
        with self._lock:
            return self._clock() + self._offset

    def advance_time(self, seconds: float) -> None:
        """Move the simulated clock forward (expires whatever the simulator times out)."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._offset += seconds

    # ------------------------------------------------------------------ hanging

    def hang(self) -> None:
        """Accept connections but answer no request until :meth:`release` (a provider that hangs);
        each request held is counted as ``held``, the most held at once as ``held_at_once``."""
        self._answering.clear()

    def release(self) -> None:
        """Answer again, the held requests first."""
        self._answering.set()

    def release_stalls(self) -> None:
        """End the bodies stalled by a ``truncate`` fault with ``how="stall"`` (they close)."""
        self._stalls_released.set()

    # ------------------------------------------------------------------ faults

    def set_fault(self, kind: str, count: int = 1, **params: Any) -> None:
        """Arm ``kind`` for the next ``count`` matching requests (``count=0`` disarms it)."""
        if kind not in self.FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {self.FAULT_KINDS}")
        unknown = set(params) - self.FAULT_PARAMS.get(kind, frozenset())
        if unknown:
            raise ValueError(f"fault {kind!r} takes no {sorted(unknown)}")
        self._faults.arm(kind, count, self._check_fault_params(kind, dict(params)))

    def _check_fault_params(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """Validate and fill in defaults of the kinds several simulators share; subclasses extend."""
        if "status" in params or kind == "error_5xx":
            status = int(params.get("status", 503))
            if kind == "error_5xx" and not 500 <= status <= 599:
                raise ValueError("status must be 5xx")
            params["status"] = status
        if kind == "truncate":
            if "at_byte" in params:
                if "fraction" in params:
                    raise ValueError("truncate takes fraction or at_byte, not both")
                params["at_byte"] = int(params["at_byte"])
                if params["at_byte"] < 0:
                    raise ValueError("at_byte must not be negative")
            else:
                fraction = float(params.get("fraction", 0.5))
                if not 0.0 <= fraction < 1.0:
                    raise ValueError("fraction must be in [0, 1)")
                params["fraction"] = fraction
            params["how"] = str(params.get("how", "close"))
            if params["how"] not in BREAKS:
                raise ValueError(f"how must be one of {BREAKS}")
        elif kind == "slow":
            params["seconds"] = float(params.get("seconds", 2.0))
        elif kind == "redirect":
            params["status"] = int(params.get("status", 302))
            if params["status"] not in REDIRECT_STATUSES:
                raise ValueError(f"status must be one of {REDIRECT_STATUSES}")
            if not re.fullmatch(r"https?://[^/?#\s]+", str(params.get("location", ""))):
                raise ValueError("location must look like http://host:port")
        return params

    def clear_faults(self) -> None:
        """Disarm every fault."""
        self._faults.clear()

    def faults_pending(self) -> dict[str, int]:
        """Remaining count per armed fault."""
        return self._faults.pending()

    def _truncation_limit(self, fault: dict[str, Any], start: int, end: int) -> int:
        """Where a ``truncate`` fault stops a body that covers bytes ``start``..``end`` of a file:
        ``at_byte`` (a position in the whole file) or a ``fraction`` of this body."""
        if "at_byte" in fault:
            return max(start, min(end, int(fault["at_byte"])))
        return start + int((end - start) * float(fault["fraction"]))

    def _break_body(self, h: SimRequestHandler, fault: dict[str, Any]) -> None:
        """Break the connection off after a truncated body, as the ``truncate`` fault's ``how`` says."""
        h.close_connection = True  # Content-Length promised more: closing is what the client sees
        if fault["how"] == "reset":
            # SO_LINGER 0: close() sends RST, and the client reads "connection reset by peer".
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
        elif fault["how"] == "stall":
            self._count("stalled")
            self._stalls_released.wait()

    def _take_fault(self, kind: str, matches: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any] | None:
        """Consume one armed ``kind`` whose parameters ``matches`` this request; counted as ``fault:KIND``."""
        params = self._faults.take(kind, matches)
        if params is not None:
            self._count(f"fault:{kind}")
        return params

    # ------------------------------------------------------------------ counters and request log

    @property
    def counters(self) -> dict[str, int]:
        """Snapshot of the counters (``requests``, ``fault:KIND``, and the simulator's own)."""
        with self._lock:
            return dict(self._counters)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + n

    @property
    def request_log(self) -> list[LogEntry]:
        """Recent requests, oldest first, as the simulator logs them (never with secrets)."""
        with self._lock:
            return list(self._request_log)

    def _log_request(self, entry: LogEntry) -> None:
        with self._lock:
            self._request_log.append(entry)

    # ------------------------------------------------------------------ dispatch

    def _serve(self, h: SimRequestHandler, method: str) -> None:
        self._count("requests")
        if not self._answering.is_set():
            self._count("held")
            with self._lock:
                # How many requests it held at the same time, at most (``held_at_once``).
                self._holding += 1
                self._counters["held_at_once"] = max(self._counters.get("held_at_once", 0), self._holding)
            self._answering.wait()
            with self._lock:
                self._holding -= 1
        try:
            self._handle(h, method)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            h.close_connection = True
            self._count("aborted")

    def _handle(self, h: SimRequestHandler, method: str) -> None:
        raise NotImplementedError
