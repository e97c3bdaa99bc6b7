"""Shared plumbing of the Alibaba Cloud simulators: loopback HTTP, clock, faults, RPC gateway.

Alibaba's RPC-style APIs (CCC, Dyplsapi, ...) all sit behind one "POP" gateway that checks the
common parameters and the v1.0 signature before a product sees the request.  This module
re-implements that gateway independently of any client code (the project's client must not
be able to "agree with itself"):

* ``Action, Version, AccessKeyId, SignatureMethod=HMAC-SHA1, SignatureVersion=1.0,
  SignatureNonce, Timestamp (yyyy-MM-ddTHH:mm:ssZ), Signature`` are required, in the query of
  a GET or in the query and/or the ``application/x-www-form-urlencoded`` body of a POST;
  ``Format`` is optional and, as on the real gateway, defaults to **XML**;
* ``SecurityToken`` is required for access keys configured with an STS token;
* the signature is recomputed (RFC 3986 percent-encoding over UTF-8, parameters sorted by
  name, ``METHOD&%2F&encode(canonical)``, HMAC-SHA1 keyed with ``secret + "&"``, base64).

Errors use the gateway's JSON (or XML) body ``{RequestId, HostId, Code, Message, Recommend}``
with the gateway's codes and HTTP statuses (see :data:`GATEWAY_ERRORS`).  A nonce is only
remembered once the signature has been verified, and it stays spent even if the request then
fails with a fault: a client that retries by re-sending the very same signed URL gets
``SignatureNonceUsed``, like on the real gateway.

The products live in :mod:`local.simulators.ccc`, :mod:`local.simulators.dypls` and the
file server behind their download URLs in :mod:`local.simulators.oss`; their classes are
re-exported here lazily (``from local.simulators.aliyun import CccSimulator`` works).

Run standalone: ``python -m local.simulators.aliyun --ccc-port 8091 --dypls-port 8092``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import importlib
import json
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

if TYPE_CHECKING:  # re-exported lazily by __getattr__ below (they import this module)
    from local.simulators.ccc import CccCall, CccSimulator
    from local.simulators.dypls import DyplsCall, DyplsSimulator
    from local.simulators.oss import OssSimulator

__all__ = [
    "DEFAULT_CREDENTIALS",
    "GATEWAY_ERRORS",
    "AccessKey",
    "AliyunRpcSimulator",
    "CccCall",
    "CccSimulator",
    "DyplsCall",
    "DyplsSimulator",
    "LoopbackHttpSimulator",
    "OssSimulator",
    "RpcContext",
    "RpcError",
    "RpcLogEntry",
    "SimRequestHandler",
    "compute_signature",
    "iso_utc",
    "main",
    "new_request_id",
    "percent_encode",
    "string_to_sign",
    "to_xml",
]

JsonDict = dict[str, Any]

#: What a simulator accepts when no credentials are given (never valid anywhere real).
DEFAULT_CREDENTIALS: Mapping[str, str] = {"LTAI5tSimulatorKey0000000": "simulator-secret-not-for-production"}

#: Gateway errors: code -> (HTTP status, message).  Codes and statuses are the ones Alibaba
#: documents for its OpenAPI gateway ("管控OpenAPI的客户端公用错误码"); ``Missing{Name}`` and
#: ``Invalid{Name}`` are built per parameter.
GATEWAY_ERRORS: Mapping[str, tuple[int, str]] = {
    "SignatureDoesNotMatch": (400, "Specified signature is not matched with our calculation."),
    "InvalidAccessKeyId.NotFound": (404, "Specified access key is not found."),
    "InvalidAccessKeyId.Inactive": (400, "Specified access key is disabled."),
    "SignatureNonceUsed": (400, "Specified signature nonce was used already."),
    "InvalidTimeStamp.Format": (400, "Specified time stamp or date value is not well formatted."),
    "InvalidTimeStamp.Expired": (400, "Specified time stamp or date value is expired."),
    "InvalidParameter.Format": (400, "Specified parameter format is not valid."),
    "InvalidSignatureMethod": (400, "Specified signature method is not valid."),
    "InvalidAction.NotFound": (404, "Specified api is not found, please check your url and method."),
    "UnsupportedHTTPMethod": (400, "This http method is not supported."),
    "MissingSecurityToken": (400, "SecurityToken is mandatory for this action."),
    "InvalidSecurityToken.MismatchWithAccessKey": (400, "Specified SecurityToken mismatch with the AccessKey."),
    "InvalidSecurityToken.Expired": (400, "Specified SecurityToken is expired."),
    "Throttling.User": (400, "Request was denied due to user flow control."),
    "Throttling": (400, "Request was denied due to request throttling."),
    "InternalError": (500, "The request processing has failed due to some unknown error, exception or failure."),
    "ServiceUnavailable": (503, "The request has failed due to a temporary failure of the server."),
}

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
# Checked in this order; Format is optional (default XML) and so is not listed.
_REQUIRED_COMMON = (
    "Action",
    "Version",
    "AccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
)
_SECRET_PARAMS = frozenset({"Signature", "SecurityToken"})
_MAX_BODY = 1024 * 1024
_LAZY_EXPORTS = {
    "CccCall": "local.simulators.ccc",
    "CccSimulator": "local.simulators.ccc",
    "DyplsCall": "local.simulators.dypls",
    "DyplsSimulator": "local.simulators.dypls",
    "OssSimulator": "local.simulators.oss",
}


def __getattr__(name: str) -> Any:
    # Lazy so that ccc/dypls/oss can import this module without an import cycle.
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


# --------------------------------------------------------------------------- signature v1.0


def percent_encode(text: str) -> str:
    """RFC 3986 percent-encoding over UTF-8: unreserved characters kept, the rest ``%XY``."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode("utf-8"))


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&encode(k1=v1&k2=v2...)`` over every parameter except ``Signature``."""
    canonical = "&".join(
        f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()) if k != "Signature"
    )
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical)}"


def compute_signature(method: str, params: Mapping[str, str], secret: str) -> str:
    """Base64 HMAC-SHA1 of :func:`string_to_sign`, keyed with ``secret + "&"``."""
    digest = hmac.new(f"{secret}&".encode(), string_to_sign(method, params).encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


# --------------------------------------------------------------------------- small helpers


def new_request_id() -> str:
    """An Alibaba-style request id (upper-case UUID)."""
    return str(uuid.uuid4()).upper()


def iso_utc(epoch: float, *, millis: bool = False) -> str:
    """``2021-04-14T02:34:00Z`` (or ``...00.447Z`` with ``millis``) for epoch seconds."""
    when = dt.datetime.fromtimestamp(epoch, dt.UTC)
    if millis:
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _xml_element(name: str, value: Any) -> str:
    if isinstance(value, list):
        # Alibaba's XML repeats the element for each item: <X><Item/><Item/></X> in JSON is {"X": {"Item": [..]}}.
        return "".join(_xml_element(name, item) for item in value)
    if isinstance(value, dict):
        inner = "".join(_xml_element(str(k), v) for k, v in value.items())
    elif value is None:
        inner = ""
    elif isinstance(value, bool):
        inner = "true" if value else "false"
    else:
        inner = escape(str(value))
    return f"<{name}>{inner}</{name}>"


def to_xml(root: str, body: Mapping[str, Any]) -> bytes:
    """Serialise a JSON-shaped reply the way Alibaba's ``Format=XML`` does."""
    return ('<?xml version="1.0" encoding="UTF-8"?>' + _xml_element(root, dict(body))).encode("utf-8")


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


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], owner: LoopbackHttpSimulator) -> None:
        self.owner = owner
        super().__init__(addr, SimRequestHandler)


class SimRequestHandler(BaseHTTPRequestHandler):
    """Hands every request to the owning simulator's :meth:`LoopbackHttpSimulator._handle`."""

    protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections to these endpoints
    timeout = 30  # idle keep-alive connections must not pin threads forever
    # Headers and body go out in separate writes; with Nagle on, delayed ACKs add ~40 ms a reply.
    disable_nagle_algorithm = True
    body_bytes: bytes = b""

    def log_message(self, format: str, *args: Any) -> None:
        # The simulators keep their own request logs (without secrets).
        return

    def _owner(self) -> LoopbackHttpSimulator:
        return cast(_Server, self.server).owner

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
        stream of a keep-alive connection.
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
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


class LoopbackHttpSimulator:
    """Lifecycle, simulated clock, faults and counters shared by the Alibaba simulators.

    Subclasses implement :meth:`_handle` and list their fault kinds in ``FAULT_KINDS``
    (with allowed parameters in ``FAULT_PARAMS``).
    """

    FAULT_KINDS: ClassVar[tuple[str, ...]] = ()
    FAULT_PARAMS: ClassVar[Mapping[str, frozenset[str]]] = {}
    THREAD_NAME: ClassVar[str] = "aliyun-sim"
    SERVER_HEADER: ClassVar[str] = "Tengine"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, clock: Callable[[], float] = time.time) -> None:
        """Configure; nothing listens until :meth:`start`.  ``clock`` returns epoch seconds."""
        self.host = host
        self.port = port
        self._clock = clock
        self._offset = 0.0
        self._lock = threading.RLock()
        self._faults = _FaultBook()
        self._counters: dict[str, int] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.THREAD_NAME, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

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
        """``http://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        """Simulated epoch seconds: the injected clock plus :meth:`advance_time` offsets."""
        with self._lock:
            return self._clock() + self._offset

    def advance_time(self, seconds: float) -> None:
        """Move the simulated clock forward (expires URLs, nonces, makes recordings ready)."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._offset += seconds

    # ------------------------------------------------------------------ faults and counters

    def set_fault(self, kind: str, count: int = 1, **params: Any) -> None:
        """Arm ``kind`` for the next ``count`` matching requests (``count=0`` disarms it)."""
        if kind not in self.FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {self.FAULT_KINDS}")
        unknown = set(params) - self.FAULT_PARAMS.get(kind, frozenset())
        if unknown:
            raise ValueError(f"fault {kind!r} takes no {sorted(unknown)}")
        self._faults.arm(kind, count, self._check_fault_params(kind, dict(params)))

    def _check_fault_params(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """Validate and fill in defaults; subclasses extend."""
        if "status" in params or kind == "error_5xx":
            status = int(params.get("status", 503))
            if kind == "error_5xx" and not 500 <= status <= 599:
                raise ValueError("status must be 5xx")
            params["status"] = status
        return params

    def clear_faults(self) -> None:
        """Disarm every fault."""
        self._faults.clear()

    def faults_pending(self) -> dict[str, int]:
        """Remaining count per armed fault."""
        return self._faults.pending()

    @property
    def counters(self) -> dict[str, int]:
        """Snapshot of the counters (``requests``, ``action:X``, ``error:CODE``, ``fault:KIND``, ...)."""
        with self._lock:
            return dict(self._counters)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + n

    # ------------------------------------------------------------------ dispatch

    def _serve(self, h: SimRequestHandler, method: str) -> None:
        try:
            self._handle(h, method)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            h.close_connection = True
            self._count("aborted")

    def _handle(self, h: SimRequestHandler, method: str) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- RPC gateway


@dataclass(frozen=True)
class AccessKey:
    """An access key's secret and, for STS credentials, the SecurityToken it must come with."""

    secret: str
    security_token: str | None = None


class RpcError(Exception):
    """A non-2xx RPC reply: ``{RequestId, HostId, Code, Message, Recommend, **extra}``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    @classmethod
    def gateway(cls, code: str, message: str | None = None) -> RpcError:
        """One of :data:`GATEWAY_ERRORS`, optionally with a more specific message."""
        status, default = GATEWAY_ERRORS[code]
        return cls(status, code, message or default)

    @classmethod
    def missing(cls, name: str) -> RpcError:
        """``Missing{Name}``: a required parameter is absent."""
        return cls(400, f"Missing{name}", f"{name} is mandatory for this action.")

    @classmethod
    def invalid(cls, name: str) -> RpcError:
        """``Invalid{Name}``: a parameter's value is not acceptable."""
        return cls(400, f"Invalid{name}", f"Specified parameter {name} is not valid.")


class _RawReply(Exception):
    """A reply that is not an RPC body (e.g. the HTML of a load balancer's 502)."""

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type


@dataclass(frozen=True)
class RpcContext:
    """One verified RPC request, as handed to a product's action handler."""

    action: str
    version: str
    params: Mapping[str, str]
    access_key_id: str
    request_id: str
    method: str


@dataclass(frozen=True)
class RpcLogEntry:
    """One RPC request as logged: ``Signature`` and ``SecurityToken`` are never kept."""

    method: str
    action: str
    version: str
    access_key_id: str
    status: int
    code: str
    params: tuple[tuple[str, str], ...]


class AliyunRpcSimulator(LoopbackHttpSimulator):
    """The POP gateway in front of one product: verifies, then calls :meth:`_call_action`.

    Subclasses set ``PRODUCT``, ``HOST_ID`` and ``ACTIONS`` (``version -> action names``)
    and implement :meth:`_call_action`, returning the JSON-shaped success body or raising
    :class:`RpcError`.  Gateway faults: ``throttle`` (``status`` 400 ``Throttling.User`` by
    default, 503 gives ``ServiceUnavailable``; ``code`` overrides), ``error_5xx``
    (``status``: 500 ``InternalError`` / 503 ``ServiceUnavailable`` JSON, other 5xx an HTML
    page as a load balancer would send) and ``expire_url`` (the next signed URL issued is
    already expired).  Every fault takes ``action`` to hit only that Action.
    """

    PRODUCT: ClassVar[str] = ""
    HOST_ID: ClassVar[str] = ""
    ACTIONS: ClassVar[Mapping[str, frozenset[str]]] = {}
    FAULT_KINDS: ClassVar[tuple[str, ...]] = ("throttle", "error_5xx", "expire_url")
    FAULT_PARAMS: ClassVar[Mapping[str, frozenset[str]]] = {
        "throttle": frozenset({"status", "code", "action"}),
        "error_5xx": frozenset({"status", "action"}),
        "expire_url": frozenset({"action"}),
    }

    def __init__(
        self,
        *,
        credentials: Mapping[str, str | AccessKey] | None = None,
        api_versions: Iterable[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        nonce_ttl_s: float = 900.0,
        max_clock_skew_s: float = 900.0,
        timestamp_clock: Callable[[], float] | None = None,
        request_log_size: int = 10000,
    ) -> None:
        """``credentials`` maps access key id -> secret (or :class:`AccessKey` with an STS token).

        ``Timestamp`` must be within ``max_clock_skew_s`` of ``timestamp_clock`` (default: the
        simulated clock, :meth:`now`).  A local stack whose clients sign with the wall clock
        while it fast-forwards recordings with :meth:`advance_time` passes ``time.time``.
        """
        super().__init__(host=host, port=port, clock=clock)
        creds = DEFAULT_CREDENTIALS if credentials is None else credentials
        self._keys: dict[str, AccessKey] = {
            key_id: value if isinstance(value, AccessKey) else AccessKey(str(value)) for key_id, value in creds.items()
        }
        versions = tuple(self.ACTIONS) if api_versions is None else tuple(api_versions)
        unknown = set(versions) - set(self.ACTIONS)
        if not versions or unknown:
            raise ValueError(f"api_versions must be a non-empty subset of {tuple(self.ACTIONS)}")
        self.api_versions = versions
        self.nonce_ttl_s = float(nonce_ttl_s)
        self.max_clock_skew_s = float(max_clock_skew_s)
        self._timestamp_clock = timestamp_clock
        self._nonces: dict[str, float] = {}
        self._disabled_keys: set[str] = set()
        self._expired_tokens: set[str] = set()
        self._request_log: deque[RpcLogEntry] = deque(maxlen=request_log_size)

    # ------------------------------------------------------------------ test hooks

    def disable_access_key(self, access_key_id: str) -> None:
        """Make ``access_key_id`` answer ``InvalidAccessKeyId.Inactive``."""
        with self._lock:
            self._disabled_keys.add(access_key_id)

    def expire_security_token(self, access_key_id: str) -> None:
        """Make the STS token of ``access_key_id`` answer ``InvalidSecurityToken.Expired``."""
        with self._lock:
            self._expired_tokens.add(access_key_id)

    @property
    def request_log(self) -> list[RpcLogEntry]:
        """Recent RPC requests, without signatures or security tokens."""
        with self._lock:
            return list(self._request_log)

    @property
    def endpoint(self) -> str:
        """The RPC endpoint URL (``base_url`` + ``/``)."""
        return f"{self.base_url}/"

    def _take_fault(self, kind: str, action: str) -> dict[str, Any] | None:
        params = self._faults.take(kind, lambda p: p.get("action") in (None, action))
        if params is not None:
            self._count(f"fault:{kind}")
        return params

    def _expires(self, ttl_s: float, action: str) -> int:
        """Epoch seconds at which a URL issued now stops working (honours ``expire_url``)."""
        now = self.now()
        if self._take_fault("expire_url", action) is not None:
            return int(now) - 1
        return int(now + ttl_s)

    # ------------------------------------------------------------------ request handling

    def _handle(self, h: SimRequestHandler, method: str) -> None:
        self._count("requests")
        request_id = new_request_id()
        if method in ("POST", "PUT", "DELETE") and not h.read_body():
            self._reply_error(h, RpcError.gateway("InvalidParameter.Format", "Request body is not readable."), "JSON")
            return
        parts = urlsplit(h.path)
        params: dict[str, str] = {}
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if method == "POST" and h.body_bytes and ctype in ("", "application/x-www-form-urlencoded"):
            # The form body is part of the signed set, as the vendor's SDK signs it.
            pairs += parse_qsl(h.body_bytes.decode("utf-8", "replace"), keep_blank_values=True)
        for key, value in pairs:
            params.setdefault(key, value)
        fmt = params.get("Format", "XML")

        def log(status: int, code: str) -> None:
            # Logged before the reply is written: a client holding its answer finds its request here.
            entry = RpcLogEntry(
                method=method,
                action=params.get("Action", ""),
                version=params.get("Version", ""),
                access_key_id=params.get("AccessKeyId", ""),
                status=status,
                code=code,
                params=tuple(sorted((k, v) for k, v in params.items() if k not in _SECRET_PARAMS)),
            )
            with self._lock:
                self._request_log.append(entry)

        try:
            if fmt not in ("JSON", "XML"):
                fmt = "JSON"
                raise RpcError.gateway("InvalidParameter.Format")
            if method not in ("GET", "POST"):
                raise RpcError.gateway("UnsupportedHTTPMethod")
            if parts.path not in ("", "/"):
                raise RpcError.gateway("InvalidAction.NotFound")
            ctx = self._verify(method, params, request_id)
            self._count(f"action:{ctx.action}")
            self._gateway_faults(ctx.action)
            body = self._call_action(ctx)
            body.setdefault("RequestId", request_id)
            code = str(body.get("Code", "OK"))
            if code != "OK":
                self._count(f"error:{code}")  # business errors answered with HTTP 200 (Dyplsapi)
            log(200, code)
            self._reply(h, 200, body, fmt, f"{ctx.action}Response", request_id)
        except RpcError as err:
            self._count(f"error:{err.code}")
            log(err.status, err.code)
            self._reply_error(h, err, fmt, request_id)
        except _RawReply as raw:
            log(raw.status, f"HTTP{raw.status}")
            h.send_bytes(raw.status, raw.body, raw.content_type, [("Connection", "close")])
            h.close_connection = True

    def _verify(self, method: str, params: Mapping[str, str], request_id: str) -> RpcContext:
        """The gateway's checks, in the gateway's order; returns the verified context."""
        for name in _REQUIRED_COMMON:
            if not params.get(name):
                raise RpcError.missing(name)
        version, action = params["Version"], params["Action"]
        if version not in self.api_versions:
            raise RpcError.invalid("Version")
        if action not in self.ACTIONS[version]:
            raise RpcError.gateway("InvalidAction.NotFound")
        if params["SignatureMethod"] != "HMAC-SHA1":
            raise RpcError.gateway("InvalidSignatureMethod")
        if params["SignatureVersion"] != "1.0":
            raise RpcError.invalid("SignatureVersion")
        stamp = params["Timestamp"]
        if not _TIMESTAMP_RE.fullmatch(stamp):
            raise RpcError.gateway("InvalidTimeStamp.Format")
        try:
            sent = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            raise RpcError.gateway("InvalidTimeStamp.Format") from None
        now = self.now()
        reference = now if self._timestamp_clock is None else self._timestamp_clock()
        if abs(reference - sent) > self.max_clock_skew_s:
            raise RpcError.gateway("InvalidTimeStamp.Expired")
        key_id = params["AccessKeyId"]
        with self._lock:
            key = self._keys.get(key_id)
            disabled = key_id in self._disabled_keys
            token_expired = key_id in self._expired_tokens
        if key is None:
            raise RpcError.gateway("InvalidAccessKeyId.NotFound")
        if disabled:
            raise RpcError.gateway("InvalidAccessKeyId.Inactive")
        expected = compute_signature(method, params, key.secret)
        if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
            # The real gateway shows its string-to-sign so the caller can diff it with its own.
            message = (
                "Specified signature is not matched with our calculation. server string to sign is:"
                + string_to_sign(method, params)
            )
            raise RpcError.gateway("SignatureDoesNotMatch", message)
        if key.security_token is not None:
            token = params.get("SecurityToken")
            if not token:
                raise RpcError.gateway("MissingSecurityToken")
            if not hmac.compare_digest(token.encode(), key.security_token.encode()):
                raise RpcError.gateway("InvalidSecurityToken.MismatchWithAccessKey")
            if token_expired:
                raise RpcError.gateway("InvalidSecurityToken.Expired")
        nonce = params["SignatureNonce"]
        with self._lock:
            for old, seen in list(self._nonces.items()):
                if now - seen > self.nonce_ttl_s:
                    del self._nonces[old]
            if nonce in self._nonces:
                raise RpcError.gateway("SignatureNonceUsed")
            self._nonces[nonce] = now
        return RpcContext(action, version, dict(params), key_id, request_id, method)

    def _gateway_faults(self, action: str) -> None:
        throttle = self._take_fault("throttle", action)
        if throttle is not None:
            status = int(throttle.get("status", 400))
            code = str(throttle.get("code") or ("ServiceUnavailable" if status == 503 else "Throttling.User"))
            message = GATEWAY_ERRORS.get(code, (status, "Request was denied due to flow control."))[1]
            raise RpcError(status, code, message)
        err = self._take_fault("error_5xx", action)
        if err is not None:
            status = int(err["status"])
            if status == 500:
                raise RpcError.gateway("InternalError")
            if status == 503:
                raise RpcError.gateway("ServiceUnavailable")
            reason = BaseHTTPRequestHandler.responses.get(status, ("Server Error",))[0]
            page = f"<html><head><title>{status} {reason}</title></head><body><center><h1>{status} {reason}</h1>"
            raise _RawReply(status, f"{page}</center></body></html>\n".encode(), "text/html")

    def _call_action(self, ctx: RpcContext) -> JsonDict:
        raise NotImplementedError

    # ------------------------------------------------------------------ replies

    def _reply(self, h: SimRequestHandler, status: int, body: JsonDict, fmt: str, root: str, request_id: str) -> None:
        if fmt == "XML":
            data, ctype = to_xml(root, body), "text/xml;charset=utf-8"
        else:
            data, ctype = json.dumps(body, ensure_ascii=False).encode("utf-8"), "application/json;charset=utf-8"
        h.send_bytes(status, data, ctype, [("x-acs-request-id", request_id)])

    def _reply_error(self, h: SimRequestHandler, err: RpcError, fmt: str, request_id: str | None = None) -> None:
        rid = request_id or new_request_id()
        body: JsonDict = {
            "RequestId": rid,
            "HostId": self.HOST_ID,
            "Code": err.code,
            "Message": err.message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={err.code}&product={self.PRODUCT}&requestId={rid}",
            **err.extra,
        }
        self._reply(h, err.status, body, fmt, "Error", rid)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Run a CCC and a Dyplsapi simulator standalone until interrupted."""
    from local.simulators.ccc import CccSimulator
    from local.simulators.dypls import DyplsSimulator

    parser = argparse.ArgumentParser(prog="python -m local.simulators.aliyun", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ccc-port", type=int, default=8091)
    parser.add_argument("--dypls-port", type=int, default=8092)
    parser.add_argument("--access-key-id", default=next(iter(DEFAULT_CREDENTIALS)))
    parser.add_argument("--access-key-secret", default=None, help="default: a random secret, printed")
    parser.add_argument("--calls", type=int, default=0, help="place N calls on each simulator")
    args = parser.parse_args(argv)
    secret = args.access_key_secret or secrets.token_urlsafe(18)
    creds = {args.access_key_id: secret}
    ccc = CccSimulator(credentials=creds, host=args.host, port=args.ccc_port, not_ready_seconds=0)
    dypls = DyplsSimulator(credentials=creds, host=args.host, port=args.dypls_port, not_ready_seconds=0)

    def _on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_term)
    with ccc, dypls:
        print(f"ccc   {ccc.endpoint} instance={ccc.instance_id} files={ccc.oss.base_url}", flush=True)
        print(f"dypls {dypls.endpoint} pool_keys={','.join(sorted(dypls.pool_keys))}", flush=True)
        print(f"AccessKeyId={args.access_key_id} AccessKeySecret={secret}", file=sys.stderr, flush=True)
        for i in range(args.calls):
            c = ccc.place_call(transferred_legs=i % 2, duration_s=20)
            d = dypls.place_call(duration_s=20)
            print(f"ccc contact {c.contact_id} files={list(c.file_names)}; dypls call {d.call_id}", file=sys.stderr)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
