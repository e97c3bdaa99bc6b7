"""Strict simulator of an S-series-style PBX API (Yeastar S-series / OpenVox UC).

A real HTTP(S) server on loopback that follows the vendor documents (seeds 003 and 004,
``docs/providers.md`` section 2) including their unpleasant parts:

* every reply is HTTP 200 with ``{"status": "Failed", "errno": "..."}`` on failure
  (errno is a *string*); a spent / expired / foreign ``random`` gives ``{"status": "Failed"}``
  with no errno at all;
* the login password is the lower-case md5 hex of the API password; five failed logins lock
  the caller's IP for ten minutes;
* tokens die after ``token_ttl`` seconds without traffic, randoms after ``random_ttl``
  seconds, and a recording random works exactly once;
* the CDR download link of the seed contains raw spaces in the query, which is accepted;
* call reports (``NewCdr``) are pushed only while a token with a report URL is alive.

Time is injectable (``clock=``) and can be moved forward with :meth:`PbxSimulator.advance_time`
so tests can expire tokens and randoms without sleeping.  Faults can be switched on for the
next N matching requests with :meth:`PbxSimulator.set_fault`.

Run standalone: ``python -m local.simulators.pbx --port 8088 --calls 5``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import hashlib
import io
import ipaddress
import json
import re
import secrets
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from local.simulators.wav import make_wav

__all__ = [
    "CDR_COLUMNS",
    "FAULT_KINDS",
    "PbxSimulator",
    "PushRecord",
    "SimulatedCall",
    "TlsFiles",
    "main",
    "make_self_signed",
    "render_cdr_csv",
]

#: Column order of the CDR CSV (the vendor does not publish it; clients must parse by header).
CDR_COLUMNS: tuple[str, ...] = (
    "callid",
    "timestart",
    "callfrom",
    "callto",
    "callduraction",
    "talkduraction",
    "srctrunkname",
    "desttrunkname",
    "status",
    "type",
    "recording",
    "didnumber",
    "sn",
)

#: Fault kinds accepted by :meth:`PbxSimulator.set_fault`.
FAULT_KINDS: tuple[str, ...] = ("slow", "error_5xx", "expire_random", "truncate", "expire_token")

_DOWNLOAD_ENDPOINTS = ("recording/download", "cdr/download")
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_TIME_FMT = "%Y-%m-%d %H:%M:%S"
_EXTID_RE = re.compile(r"all|\d+(,\d+)*")
_CHUNK = 64 * 1024
_MAX_BODY = 1024 * 1024
# Headers the seed's example replies carry.
_CORS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS, PUT, DELETE"),
)
_ROUTES: dict[str, str] = {
    "login": "POST",
    "logout": "POST",
    "heartbeat": "POST",
    "recording/get_random": "POST",
    "recording/download": "GET",
    "cdr/get_random": "POST",
    "cdr/download": "GET",
}
_COUNTER_KEYS = (
    "requests",
    "logins",
    "logins_ok",
    "logins_failed",
    "logins_locked",
    "logouts",
    "heartbeats",
    "token_errors",
    "get_random",
    "get_random_failed",
    "cdr_get_random",
    "cdr_get_random_failed",
    "downloads_ok",
    "downloads_failed",
    "downloads_truncated",
    "downloads_aborted",
    "downloads_5xx",
    "cdr_downloads_ok",
    "cdr_downloads_failed",
    "push_attempts",
    "pushes_ok",
    "pushes_failed",
    "reports_skipped",
)

JsonDict = dict[str, Any]


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the HTTPS mode.

    ``cert_path`` holds the server certificate followed by its CA (the chain the server
    sends), ``key_path`` the server key, ``ca_path`` the CA certificate alone: give
    ``ca_path`` (or ``cert_path``) to a client as its CA bundle.
    """

    cert_path: Path
    key_path: Path
    ca_path: Path


def make_self_signed(tmpdir: str | Path, hostname: str = "127.0.0.1") -> TlsFiles:
    """Create a throw-away CA and a server certificate for ``hostname`` in ``tmpdir``.

    The server certificate has CN ``hostname`` and SANs for ``hostname``, 127.0.0.1 and
    ``localhost``.  A separate CA (rather than one self-signed leaf) keeps strict verifiers
    (Python 3.13's ``VERIFY_X509_STRICT``) happy.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(tmpdir)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callvault PBX simulator CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        host_ip = ipaddress.ip_address(hostname)
        if str(host_ip) != "127.0.0.1":
            sans.append(x509.IPAddress(host_ip))
    except ValueError:
        if hostname != "localhost":
            sans.append(x509.DNSName(hostname))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    files = TlsFiles(out / "pbx-cert.pem", out / "pbx-key.pem", out / "pbx-ca.pem")
    files.ca_path.write_bytes(ca_pem)
    files.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    files.key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class SimulatedCall:
    """A call placed with :meth:`PbxSimulator.place_call`.

    ``recording`` is None (and ``size`` 0, ``sha256`` None) when the call was not recorded.
    ``report`` is the NewCdr report exactly as pushed (all values strings); ``cdr`` is the
    row of the CDR CSV.
    """

    callid: str
    cdrid: str
    recording: str | None
    size: int
    sha256: str | None
    report: dict[str, str]
    cdr: dict[str, str]
    timestart: dt.datetime


@dataclass(frozen=True)
class PushRecord:
    """One HTTP attempt to push a report.  ``status`` is None when the connection failed."""

    url: str
    callid: str
    attempt: int
    status: int | None
    error: str | None
    body: dict[str, str]


@dataclass
class _Token:
    value: str
    ip: str
    last_seen: float
    report_url: str | None
    issued: float


@dataclass
class _Random:
    value: str
    kind: str  # "recording" | "cdr"
    target: tuple[str, ...]  # (recording,) or (extid, starttime, endtime)
    token: str
    allowed: frozenset[str]
    expires_at: float
    used: bool = False


@dataclass
class _Fault:
    remaining: int
    params: dict[str, Any] = field(default_factory=dict)


class _Failure(Exception):
    """Raised inside request handling to answer HTTP 200 ``{"status":"Failed"[, "errno"]}``."""

    def __init__(self, errno: str | None, counter: str | None = None) -> None:
        super().__init__(errno or "Failed")
        self.errno = errno
        self.counter = counter

    def body(self) -> JsonDict:
        out: JsonDict = {"status": "Failed"}
        if self.errno is not None:
            out["errno"] = self.errno
        return out


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()  # noqa: S324 - the vendor protocol demands md5


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    """Threading server that does the TLS handshake in the worker thread.

    Wrapping the listening socket would handshake inside ``accept`` and let one silent
    client block every other connection.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], sim: PbxSimulator, ctx: ssl.SSLContext | None) -> None:
        self.sim = sim
        self.ssl_context = ctx
        super().__init__(addr, _Handler)

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


class _Handler(BaseHTTPRequestHandler):
    """Routes every request to the owning :class:`PbxSimulator`."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real PBX web server
    server_version = "PbxSimulator"
    timeout = 30  # idle keep-alive connections must not pin threads forever
    # Headers and body go out in separate writes; with Nagle on, delayed ACKs add ~40 ms a reply.
    disable_nagle_algorithm = True

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

    def log_message(self, format: str, *args: Any) -> None:
        # Silence the stdlib's stderr access log; the simulator keeps its own request log.
        return

    def _sim(self) -> PbxSimulator:
        return cast(_Server, self.server).sim

    def do_GET(self) -> None:
        """Dispatch a GET."""
        self._sim()._dispatch(self, "GET")

    def do_POST(self) -> None:
        """Dispatch a POST."""
        self._sim()._dispatch(self, "POST")

    def do_PUT(self) -> None:
        """Dispatch a PUT (always refused)."""
        self._sim()._dispatch(self, "PUT")

    def do_DELETE(self) -> None:
        """Dispatch a DELETE (always refused)."""
        self._sim()._dispatch(self, "DELETE")

    def do_OPTIONS(self) -> None:
        """Answer a CORS pre-flight."""
        self.send_response(200)
        for name, value in _CORS:
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    body_bytes: bytes = b""

    # -- replies

    def read_body(self) -> bool:
        """Read the body announced by Content-Length into ``body_bytes``; False if unusable.

        Read up front, before any validation, so an early failure reply cannot leave body
        bytes in the stream of a keep-alive connection.  Chunked bodies are not supported.
        """
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY:
            self.close_connection = True
            return False
        self.body_bytes = self.rfile.read(length) if length else b""
        return True

    def send_bytes(self, status: int, body: bytes, content_type: str, extra: Iterable[tuple[str, str]] = ()) -> None:
        """Send a complete small reply."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (*_CORS, *extra):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, obj: JsonDict) -> None:
        """Send an HTTP 200 JSON reply (the PBX answers 200 even for failures)."""
        self.send_bytes(200, json.dumps(obj).encode("utf-8"), "application/json; charset=utf-8")


# --------------------------------------------------------------------------- simulator


class PbxSimulator:
    """An S-series-style PBX API server with simulated calls, event pushes and faults."""

    def __init__(
        self,
        *,
        username: str = "api",
        password: str = "apipass",  # noqa: S107 - the simulator's documented default
        host: str = "127.0.0.1",
        port: int = 0,
        sn: str = "3631A2124788",
        api_versions: tuple[str, ...] = ("v0.0.1", "v1.1.0", "v2.0.0"),
        token_ttl: float = 1800.0,
        random_ttl: float = 30.0,
        report_style: str = "v1",
        tls: TlsFiles | None = None,
        clock: Callable[[], float] = time.time,
        tz: dt.tzinfo = dt.UTC,
        lockout_threshold: int = 5,
        lockout_s: float = 600.0,
        cdr_random_single_use: bool = True,
        push_attempts: int = 3,
        push_backoff_s: float = 0.2,
        push_timeout_s: float = 5.0,
    ) -> None:
        """Configure the simulator; nothing listens until :meth:`start`.

        ``password`` is the plain API password (clients send its md5).  ``clock`` returns
        epoch seconds and drives every expiry and call timestamp; ``tz`` is the PBX's local
        time zone used in ``timestart`` and recording names.  ``report_style`` is ``"v1"``
        (``"action": "NewCdr"``) or ``"v2"`` (``"event": "NewCdr"``).
        """
        if report_style not in ("v1", "v2"):
            raise ValueError("report_style must be 'v1' or 'v2'")
        if not api_versions:
            raise ValueError("api_versions must not be empty")
        self.username = username
        self.password = password
        self.host = host
        self.port = port
        self.sn = sn
        self.api_versions = tuple(api_versions)
        self.token_ttl = float(token_ttl)
        self.random_ttl = float(random_ttl)
        self.report_style = report_style
        self.tls = tls
        self.tz = tz
        self.lockout_threshold = lockout_threshold
        self.lockout_s = float(lockout_s)
        self.cdr_random_single_use = cdr_random_single_use
        # How CDR rows become the CSV the PBX answers: the column set is not published, so tests
        # may swap in another export (other headers, a BOM, a broken last line).
        self.cdr_renderer: Callable[[list[dict[str, str]]], bytes] | None = None
        self.push_attempts = max(1, push_attempts)
        self.push_backoff_s = push_backoff_s
        self.push_timeout_s = push_timeout_s

        self._clock = clock
        self._offset = 0.0
        self._lock = threading.RLock()
        self._tokens: dict[str, _Token] = {}
        self._expired_tokens: dict[str, float] = {}  # token -> when it expired
        self._failed_logins: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}
        self._randoms: dict[str, _Random] = {}
        self._recordings: dict[str, bytes] = {}
        self._cdr_rows: list[tuple[dt.datetime, dict[str, str]]] = []
        self._calls: list[SimulatedCall] = []
        self._faults: dict[str, _Fault] = {}
        self._counters: dict[str, int] = dict.fromkeys(_COUNTER_KEYS, 0)
        self._pushes: list[PushRecord] = []
        self._skipped: list[dict[str, str]] = []
        # One worker delivers reports in order, retries included, like the PBX's event queue.
        self._push_queue: deque[tuple[str, str, dict[str, str]]] = deque()
        self._push_cv = threading.Condition()
        self._push_pending = 0
        self._push_worker: threading.Thread | None = None
        self._request_log: deque[tuple[str, str, str]] = deque(maxlen=10000)
        self._seq = 1771  # so the first call gets ".1772", like the seed
        self._cdrid = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> PbxSimulator:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        ctx: ssl.SSLContext | None = None
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(self.tls.cert_path), str(self.tls.key_path))
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self, ctx)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="pbx-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and abandon pending push retries."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._push_cv:
            self._push_queue.clear()
            self._push_pending = 0
            self._push_cv.notify_all()
        worker, self._push_worker = self._push_worker, None
        if worker is not None:
            worker.join(timeout=2 * self.push_timeout_s)

    def __enter__(self) -> PbxSimulator:
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
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def url(self, endpoint: str, version: str | None = None) -> str:
        """Full URL of ``endpoint`` (e.g. ``"login"``) under ``version`` (default: the first one)."""
        return f"{self.base_url}/api/{version or self.api_versions[0]}/{endpoint.lstrip('/')}"

    @property
    def password_md5(self) -> str:
        """What a client must send as ``password`` in login."""
        return _md5(self.password)

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        """Simulated epoch seconds (the injected clock plus :meth:`advance_time` offsets)."""
        with self._lock:
            return self._clock() + self._offset

    def advance_time(self, seconds: float) -> None:
        """Move the simulated clock forward (expires tokens, randoms and lockouts)."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._offset += seconds

    # ------------------------------------------------------------------ test hooks

    def expire_all_tokens(self) -> None:
        """Make every live token expired: its next use answers errno 20006."""
        with self._lock:
            now = self.now()
            for value in list(self._tokens):
                self._expire_token(value, now)

    def set_fault(self, kind: str, count: int = 1, **params: Any) -> None:
        """Arm a fault for the next ``count`` matching requests (``count=0`` disarms it).

        * ``slow``: ``seconds`` (float, default 2.0) real delay before a download is answered.
        * ``error_5xx``: ``status`` (500-599, default 503) with a ``text/plain`` body, before
          any validation (the random is not spent).
        * ``truncate``: ``fraction`` (default 0.5): full Content-Length but the connection is
          closed after that share of the bytes (the random is spent).
        * ``expire_random``: the next randoms issued by either get_random are already expired.
        * ``expire_token``: the next authenticated requests find their token expired (20006).

        ``slow``, ``error_5xx`` and ``truncate`` take ``endpoint``: ``"recording/download"``
        (default), ``"cdr/download"`` or ``"any"``.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {FAULT_KINDS}")
        allowed = {
            "slow": {"seconds", "endpoint"},
            "error_5xx": {"status", "endpoint"},
            "truncate": {"fraction", "endpoint"},
            "expire_random": set(),
            "expire_token": set(),
        }[kind]
        unknown = set(params) - allowed
        if unknown:
            raise ValueError(f"fault {kind!r} takes no {sorted(unknown)}")
        clean: dict[str, Any] = {}
        if "endpoint" in allowed:
            endpoint = params.get("endpoint", "recording/download")
            if endpoint not in (*_DOWNLOAD_ENDPOINTS, "any"):
                raise ValueError(f"endpoint must be one of {_DOWNLOAD_ENDPOINTS} or 'any'")
            clean["endpoint"] = endpoint
        if kind == "slow":
            clean["seconds"] = float(params.get("seconds", 2.0))
        elif kind == "error_5xx":
            status = int(params.get("status", 503))
            if not 500 <= status <= 599:
                raise ValueError("status must be 5xx")
            clean["status"] = status
        elif kind == "truncate":
            fraction = float(params.get("fraction", 0.5))
            if not 0.0 <= fraction < 1.0:
                raise ValueError("fraction must be in [0, 1)")
            clean["fraction"] = fraction
        with self._lock:
            if count <= 0:
                self._faults.pop(kind, None)
            else:
                self._faults[kind] = _Fault(count, clean)

    def clear_faults(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    def faults_pending(self) -> dict[str, int]:
        """Remaining count per armed fault."""
        with self._lock:
            return {k: f.remaining for k, f in self._faults.items()}

    def _take_fault(self, kind: str, endpoint: str | None = None) -> dict[str, Any] | None:
        with self._lock:
            fault = self._faults.get(kind)
            if fault is None:
                return None
            target = fault.params.get("endpoint")
            if endpoint is not None and target not in (None, "any", endpoint):
                return None
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self._faults[kind]
            return dict(fault.params)

    # ------------------------------------------------------------------ observation

    @property
    def counters(self) -> dict[str, int]:
        """Snapshot of the request / push counters."""
        with self._lock:
            return dict(self._counters)

    @property
    def pushes(self) -> list[PushRecord]:
        """Every push attempt so far, in order."""
        with self._lock:
            return list(self._pushes)

    @property
    def skipped_reports(self) -> list[dict[str, str]]:
        """Reports not pushed because no token with a report URL was alive."""
        with self._lock:
            return list(self._skipped)

    @property
    def report_url(self) -> str | None:
        """Report URL of the most recently logged-in live token that registered one."""
        with self._lock:
            urls = self._live_report_urls()
            return urls[-1] if urls else None

    @property
    def live_tokens(self) -> list[str]:
        """Tokens currently alive."""
        with self._lock:
            self._sweep(self.now())
            return list(self._tokens)

    @property
    def calls(self) -> list[SimulatedCall]:
        """Calls placed so far."""
        with self._lock:
            return list(self._calls)

    @property
    def request_log(self) -> list[tuple[str, str, str]]:
        """``(method, path-with-query, client ip)`` of recent requests."""
        with self._lock:
            return list(self._request_log)

    def recording(self, name: str) -> bytes:
        """Exact bytes of a stored recording (KeyError if unknown)."""
        with self._lock:
            return self._recordings[name]

    def delete_recording(self, name: str) -> None:
        """Remove a recording so get_random / download answer errno 10023."""
        with self._lock:
            self._recordings.pop(name, None)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + n

    # ------------------------------------------------------------------ calls and reports

    def place_call(
        self,
        caller: str = "101",
        callee: str = "106",
        *,
        duration_s: float = 30.0,
        ring_s: float = 5.0,
        recorded: bool = True,
        status: str = "ANSWERED",
        call_type: str = "Internal",
        start: dt.datetime | None = None,
        channels: int = 1,
        sample_rate: int = 8000,
        src_trunk: str | None = None,
        dest_trunk: str | None = None,
        did: str = "",
        push: bool = True,
    ) -> SimulatedCall:
        """Simulate a finished call: recording, CDR row and (if ``push``) a NewCdr report.

        ``duration_s`` is the talk time and the audio length; ``callduraction`` adds
        ``ring_s``.  ``talkduraction`` is 0 for NO ANSWER / BUSY / FAILED.  Without
        ``start`` the call ends "now" on the simulated clock.  The report goes out in a
        background thread; see :meth:`wait_pushes`.
        """
        total = ring_s + duration_s
        with self._lock:
            if start is None:
                start = dt.datetime.fromtimestamp(self.now() - total, self.tz)
            elif start.tzinfo is None:
                start = start.replace(tzinfo=self.tz)
            start = start.astimezone(self.tz).replace(microsecond=0)
            self._seq += 1
            self._cdrid += 1
            seq, cdrid = self._seq, str(self._cdrid)
        epoch = int(start.timestamp())
        callid = f"{epoch}.{seq}"
        talk = 0 if status in ("NO ANSWER", "BUSY", "FAILED") else round(duration_s)
        if src_trunk is None:
            src_trunk = "SIPTrunk1" if call_type == "Inbound" else ""
        if dest_trunk is None:
            dest_trunk = "SIPTrunk1" if call_type == "Outbound" else ""

        name: str | None = None
        audio = b""
        if recorded:
            name = f"exten-{caller}-{callee}-{start:%Y%m%d}-{start:%H%M%S}-{callid}.wav"
            audio = make_wav(duration_s, seed=f"{self.sn}:{callid}", sample_rate=sample_rate, channels=channels)

        cdr = {
            "callid": callid,
            "timestart": start.strftime(_TIME_FMT),
            "callfrom": caller,
            "callto": callee,
            "callduraction": str(round(total)),
            "talkduraction": str(talk),
            "srctrunkname": src_trunk,
            "desttrunkname": dest_trunk,
            "status": status,
            "type": call_type,
            "recording": name or "",
            "didnumber": did,
            "sn": self.sn,
        }
        report: dict[str, str] = {"action" if self.report_style == "v1" else "event": "NewCdr"}
        for key in CDR_COLUMNS:
            if key == "recording" and name is None:
                continue  # absent, not empty, when the call was not recorded
            if key == "sn":
                report["cdrid"] = cdrid
            report[key] = cdr[key]

        call = SimulatedCall(
            callid=callid,
            cdrid=cdrid,
            recording=name,
            size=len(audio),
            sha256=hashlib.sha256(audio).hexdigest() if name else None,
            report=report,
            cdr=cdr,
            timestart=start,
        )
        with self._lock:
            if name is not None:
                self._recordings[name] = audio
            self._cdr_rows.append((start.replace(tzinfo=None), cdr))
            self._calls.append(call)
        if push:
            self.push_report(call)
        return call

    def push_report(self, call: SimulatedCall) -> int:
        """(Re)send ``call.report`` to every live report URL, in the background and in order.

        Returns how many URLs it was queued for; 0 means no live token had a report URL and
        the report was recorded in :attr:`skipped_reports` instead.
        """
        with self._lock:
            urls = list(dict.fromkeys(self._live_report_urls()))
            if not urls:
                self._skipped.append(dict(call.report))
                self._counters["reports_skipped"] += 1
                return 0
        with self._push_cv:
            for url in urls:
                self._push_queue.append((url, call.callid, dict(call.report)))
                self._push_pending += 1
            if self._push_worker is None or not self._push_worker.is_alive():
                self._push_worker = threading.Thread(target=self._push_loop, name="pbx-push", daemon=True)
                self._push_worker.start()
            self._push_cv.notify_all()
        return len(urls)

    def wait_pushes(self, timeout: float = 5.0) -> bool:
        """Wait until every queued push (retries included) is done; True if all were."""
        with self._push_cv:
            return self._push_cv.wait_for(lambda: self._push_pending == 0, timeout)

    def _push_loop(self) -> None:
        while True:
            with self._push_cv:
                self._push_cv.wait_for(lambda: bool(self._push_queue) or self._stopping.is_set(), 1.0)
                if self._stopping.is_set():
                    return
                if not self._push_queue:
                    continue
                url, callid, body = self._push_queue.popleft()
            try:
                self._deliver(url, callid, body)
            finally:
                with self._push_cv:
                    self._push_pending = max(0, self._push_pending - 1)
                    self._push_cv.notify_all()

    def _live_report_urls(self) -> list[str]:
        self._sweep(self.now())
        live = sorted(self._tokens.values(), key=lambda t: t.issued)
        return [t.report_url for t in live if t.report_url]

    def _deliver(self, url: str, callid: str, body: dict[str, str]) -> None:
        data = json.dumps(body).encode("utf-8")
        for attempt in range(1, self.push_attempts + 1):
            if self._stopping.is_set():
                return
            status: int | None = None
            error: str | None = None
            req = urllib.request.Request(  # noqa: S310 - URL given by the logged-in client
                url,
                data=data,
                method="POST",
                headers={"User-Agent": "WebAPI", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=self.push_timeout_s) as resp:  # noqa: S310
                    resp.read()
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
                error = f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._pushes.append(PushRecord(url, callid, attempt, status, error, body))
                self._counters["push_attempts"] += 1
                if status == 200:
                    self._counters["pushes_ok"] += 1
                    return
            if attempt < self.push_attempts:
                self._stopping.wait(self.push_backoff_s * (2 ** (attempt - 1)))
        self._count("pushes_failed")

    # ------------------------------------------------------------------ token state

    def _expire_token(self, value: str, now: float) -> None:
        if self._tokens.pop(value, None) is not None:
            self._expired_tokens[value] = now

    def _sweep(self, now: float) -> None:
        for value, tok in list(self._tokens.items()):
            if now - tok.last_seen > self.token_ttl:
                self._expire_token(value, tok.last_seen + self.token_ttl)
        # Remember expired tokens for a day so 20006 can be told apart from 20004.
        for value, when in list(self._expired_tokens.items()):
            if now - when > 86400:
                del self._expired_tokens[value]
        for value, rnd in list(self._randoms.items()):
            if now - rnd.expires_at > 3600:
                del self._randoms[value]

    def _auth(self, query: dict[str, str]) -> _Token:
        value = query.get("token", "")
        with self._lock:
            if not value:
                self._counters["token_errors"] += 1
                raise _Failure("20005")
            now = self.now()
            self._sweep(now)
            tok = self._tokens.get(value)
            if tok is None:
                self._counters["token_errors"] += 1
                raise _Failure("20006" if value in self._expired_tokens else "20004")
            if self._take_fault("expire_token") is not None:
                self._expire_token(value, now)
                self._counters["token_errors"] += 1
                raise _Failure("20006")
            tok.last_seen = now  # any authenticated traffic keeps the token alive
            return tok

    def _issue_random(self, kind: str, target: tuple[str, ...], tok: _Token, allowedip: str) -> str:
        value = secrets.token_hex(16)
        with self._lock:
            now = self.now()
            expires = now + self.random_ttl
            if self._take_fault("expire_random") is not None:
                expires = now - 1.0
            allowed = {tok.ip} | ({allowedip} if allowedip else set())
            self._randoms[value] = _Random(value, kind, target, tok.value, frozenset(allowed), expires)
        return value

    def _spend_random(
        self, value: str, kind: str, target: tuple[str, ...], tok: _Token, ip: str, single_use: bool
    ) -> None:
        """Validate a random for this download and mark it used; ``_Failure(None)`` otherwise."""
        with self._lock:
            rnd = self._randoms.get(value)
            if (
                rnd is None
                or rnd.kind != kind
                or rnd.target != target
                or rnd.token != tok.value
                or rnd.used
                or self.now() > rnd.expires_at
                or ip not in rnd.allowed
            ):
                raise _Failure(None)
            if single_use:
                rnd.used = True

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, h: _Handler, method: str) -> None:
        ip = h.client_address[0]
        parts = urlsplit(h.path)
        with self._lock:
            self._counters["requests"] += 1
            self._request_log.append((method, h.path, ip))
        m = re.fullmatch(r"/api/([^/]+)/(.+?)/?", parts.path)
        endpoint = m.group(2) if m else ""
        if m is None or m.group(1) not in self.api_versions or endpoint not in _ROUTES:
            # Connection: close because any request body is left unread.
            h.send_bytes(404, b"404 Not Found\n", "text/plain; charset=utf-8", [("Connection", "close")])
            return
        if method != _ROUTES[endpoint]:
            h.send_bytes(
                405,
                b"405 Method Not Allowed\n",
                "text/plain; charset=utf-8",
                [("Allow", _ROUTES[endpoint]), ("Connection", "close")],
            )
            return
        if method == "POST" and not h.read_body():
            h.send_json(_Failure("10004").body())
            return
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        handler = {
            "login": self._h_login,
            "logout": self._h_logout,
            "heartbeat": self._h_heartbeat,
            "recording/get_random": self._h_recording_random,
            "recording/download": self._h_recording_download,
            "cdr/get_random": self._h_cdr_random,
            "cdr/download": self._h_cdr_download,
        }[endpoint]
        try:
            handler(h, query, ip)
        except _Failure as fail:
            if fail.counter:
                self._count(fail.counter)
            h.send_json(fail.body())
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    @staticmethod
    def _json_body(h: _Handler) -> JsonDict:
        raw = h.body_bytes
        if not raw.strip():
            return {}
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _Failure("10004") from None
        if not isinstance(obj, dict):
            raise _Failure("10004")
        return obj

    @staticmethod
    def _str_field(body: JsonDict, name: str, *, required: bool) -> str:
        value = body.get(name)
        if value is None:
            if required:
                raise _Failure("10004")
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _Failure("10004")
        text = str(value).strip()
        if required and not text:
            raise _Failure("10004")
        return text

    @classmethod
    def _allowed_ip(cls, body: JsonDict) -> str:
        text = cls._str_field(body, "allowedip", required=False)
        if text:
            try:
                text = str(ipaddress.ip_address(text))  # exactly one IP address
            except ValueError:
                raise _Failure("10004") from None
        return text

    # -- endpoints

    def _h_login(self, h: _Handler, query: dict[str, str], ip: str) -> None:
        with self._lock:
            self._counters["logins"] += 1
            now = self.now()
            until = self._locked_until.get(ip)
            if until is not None and now < until:
                raise _Failure("20002", "logins_locked")
            if until is not None:
                del self._locked_until[ip]
        body = self._json_body(h)
        username = self._str_field(body, "username", required=True)
        password = self._str_field(body, "password", required=True)
        url = self._str_field(body, "url", required=False)
        urltag = self._str_field(body, "urltag", required=False)
        with self._lock:
            # Byte-exact: an upper-case md5 is a wrong password, as on the device.
            if not (
                secrets.compare_digest(username, self.username)
                and secrets.compare_digest(password, _md5(self.password))
            ):
                fails = self._failed_logins.get(ip, 0) + 1
                if fails >= self.lockout_threshold:
                    self._failed_logins.pop(ip, None)
                    self._locked_until[ip] = now + self.lockout_s
                else:
                    self._failed_logins[ip] = fails
                raise _Failure("20003", "logins_failed")
            self._failed_logins.pop(ip, None)
            report_url: str | None = None
            if url and urltag == "1":
                report_url = url if "://" in url else f"http://{url}"
            value = secrets.token_hex(16)
            self._tokens[value] = _Token(value, ip, now, report_url, now)
            self._counters["logins_ok"] += 1
        h.send_json({"status": "Success", "token": value})

    def _h_logout(self, h: _Handler, query: dict[str, str], ip: str) -> None:
        tok = self._auth(query)
        with self._lock:
            self._tokens.pop(tok.value, None)
            self._counters["logouts"] += 1
        h.send_json({"status": "Success"})

    def _h_heartbeat(self, h: _Handler, query: dict[str, str], ip: str) -> None:
        self._auth(query)
        self._count("heartbeats")
        h.send_json({"status": "Success"})

    def _h_recording_random(self, h: _Handler, query: dict[str, str], ip: str) -> None:
        tok = self._auth(query)
        try:
            body = self._json_body(h)
            name = self._str_field(body, "recording", required=True)
            allowedip = self._allowed_ip(body)
            with self._lock:
                if name not in self._recordings:
                    raise _Failure("10023")
        except _Failure as fail:
            fail.counter = "get_random_failed"
            raise
        value = self._issue_random("recording", (name,), tok, allowedip)
        self._count("get_random")
        h.send_json({"status": "Success", "recording": name, "random": value})

    def _h_cdr_random(self, h: _Handler, query: dict[str, str], ip: str) -> None:
        tok = self._auth(query)
        try:
            body = self._json_body(h)
            extid, start, end = self._cdr_params(
                {k: self._str_field(body, k, required=True) for k in ("extid", "starttime", "endtime")}
            )
            allowedip = self._allowed_ip(body)
        except _Failure as fail:
            fail.counter = "cdr_get_random_failed"
            raise
        value = self._issue_random("cdr", (extid, start, end), tok, allowedip)
        self._count("cdr_get_random")
        h.send_json({"status": "Success", "extid": extid, "starttime": start, "endtime": end, "random": value})

    @staticmethod
    def _cdr_params(src: dict[str, str]) -> tuple[str, str, str]:
        extid = src.get("extid", "").replace(" ", "")
        start, end = src.get("starttime", ""), src.get("endtime", "")
        if not _EXTID_RE.fullmatch(extid):
            raise _Failure("10004")
        for text in (start, end):
            if not _TIME_RE.fullmatch(text):
                raise _Failure("10004")
            try:
                dt.datetime.strptime(text, _TIME_FMT)
            except ValueError:
                raise _Failure("10004") from None
        return extid, start, end

    def _download_faults(self, h: _Handler, endpoint: str) -> bool:
        """Apply ``slow`` and ``error_5xx``; True if a 5xx reply was sent."""
        slow = self._take_fault("slow", endpoint)
        if slow is not None:
            time.sleep(slow["seconds"])
        err = self._take_fault("error_5xx", endpoint)
        if err is not None:
            status = int(err["status"])
            reason = h.responses.get(status, ("Server Error",))[0]
            self._count("downloads_5xx")
            h.send_bytes(status, f"{status} {reason}\n".encode(), "text/plain; charset=utf-8")
            return True
        return False

    def _h_recording_download(self, h: _Handler, query: dict[str, str], ip: str) -> None:
        if self._download_faults(h, "recording/download"):
            return
        try:
            tok = self._auth(query)
            name, value = query.get("recording", ""), query.get("random", "")
            if not name or not value:
                raise _Failure("10004")
            self._spend_random(value, "recording", (name,), tok, ip, single_use=True)
            with self._lock:
                audio = self._recordings.get(name)
            if audio is None:
                raise _Failure("10023")
        except _Failure as fail:
            fail.counter = "downloads_failed"
            raise
        self._stream(
            h,
            audio,
            "audio/x-wav",
            f"attachment; filename={name}",
            "recording/download",
            ok_counter="downloads_ok",
        )

    def _h_cdr_download(self, h: _Handler, query: dict[str, str], ip: str) -> None:
        if self._download_faults(h, "cdr/download"):
            return
        try:
            tok = self._auth(query)
            if not all(query.get(k) for k in ("extid", "starttime", "endtime", "random")):
                raise _Failure("10004")
            extid, start, end = self._cdr_params(query)
            self._spend_random(
                query["random"], "cdr", (extid, start, end), tok, ip, single_use=self.cdr_random_single_use
            )
        except _Failure as fail:
            fail.counter = "cdr_downloads_failed"
            raise
        t0, t1 = dt.datetime.strptime(start, _TIME_FMT), dt.datetime.strptime(end, _TIME_FMT)
        wanted = None if extid == "all" else set(extid.split(","))
        with self._lock:
            rows = sorted(self._cdr_rows, key=lambda r: (r[0], int(r[1]["callid"].split(".")[-1])))
        selected = [
            row
            for when, row in rows
            if t0 <= when <= t1 and (wanted is None or row["callfrom"] in wanted or row["callto"] in wanted)
        ]
        self._stream(
            h,
            (self.cdr_renderer or render_cdr_csv)(selected),
            "text/csv",
            "attachment; filename=cdr.csv",
            "cdr/download",
            ok_counter="cdr_downloads_ok",
        )

    def _stream(
        self, h: _Handler, data: bytes, content_type: str, disposition: str, endpoint: str, *, ok_counter: str
    ) -> None:
        """Send ``data`` in chunks, honouring the ``truncate`` fault."""
        limit = len(data)
        trunc = self._take_fault("truncate", endpoint)
        if trunc is not None:
            limit = int(len(data) * trunc["fraction"])
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Content-Disposition", disposition)
        for name, value in _CORS:
            h.send_header(name, value)
        if trunc is not None:
            h.send_header("Connection", "close")
        h.end_headers()
        view = memoryview(data)
        # A complete download is counted before its last bytes go out: a client that has read
        # them must find it counted (the server thread could otherwise count it later).
        counted = False
        try:
            for offset in range(0, limit, _CHUNK):
                if trunc is None and offset + _CHUNK >= limit:
                    self._count(ok_counter)
                    counted = True
                h.wfile.write(view[offset : min(offset + _CHUNK, limit)])
            if trunc is None and not counted:
                self._count(ok_counter)  # an empty body
                counted = True
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            h.close_connection = True
            if counted:
                self._count(ok_counter, -1)
            self._count("downloads_aborted")
            return
        if trunc is not None:
            # Content-Length promised more: closing now is what makes the client see a short read.
            h.close_connection = True
            self._count("downloads_truncated")


def render_cdr_csv(rows: list[dict[str, str]]) -> bytes:
    """The simulator's CDR export: a header row of :data:`CDR_COLUMNS`, then one row a call."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CDR_COLUMNS)
    for row in rows:
        writer.writerow([row[c] for c in CDR_COLUMNS])
    return buf.getvalue().encode("utf-8")


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Run the simulator standalone until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m local.simulators.pbx", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--username", default="api")
    parser.add_argument("--password", default="apipass", help="plain API password (clients send its md5)")
    parser.add_argument("--sn", default="3631A2124788")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a generated certificate")
    parser.add_argument("--report-style", choices=("v1", "v2"), default="v1")
    parser.add_argument("--token-ttl", type=float, default=1800.0)
    parser.add_argument("--calls", type=int, default=0, help="place N calls, one every --interval seconds")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=60.0, help="talk seconds per simulated call")
    args = parser.parse_args(argv)

    tls: TlsFiles | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if args.tls:
        tmp = tempfile.TemporaryDirectory(prefix="pbx-sim-tls-")
        tls = make_self_signed(tmp.name, args.host)
    sim = PbxSimulator(
        username=args.username,
        password=args.password,
        host=args.host,
        port=args.port,
        sn=args.sn,
        token_ttl=args.token_ttl,
        report_style=args.report_style,
        tls=tls,
    )
    sim.start()

    def _on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so SIGTERM also stops cleanly and removes the TLS temp dir

    signal.signal(signal.SIGTERM, _on_term)
    print(sim.base_url, flush=True)
    print(
        f"username={sim.username} password md5={sim.password_md5} versions={','.join(sim.api_versions)}",
        file=sys.stderr,
    )
    if tls is not None:
        print(f"CA bundle: {tls.ca_path}", file=sys.stderr)
    try:
        placed = 0
        while True:
            if placed < args.calls:
                time.sleep(args.interval)
                call = sim.place_call(
                    caller=str(101 + placed % 5), callee=str(106 + placed % 3), duration_s=args.duration
                )
                placed += 1
                print(
                    f"call {call.callid} recording={call.recording} size={call.size} "
                    f"report_url={sim.report_url or '-'}",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
