"""Alibaba's RPC ("POP") gateway, in front of every simulated Alibaba product.

Alibaba's RPC-style APIs (CCC, Dyplsapi, ...) all sit behind one gateway that checks the
common parameters and the v1.0 signature (:mod:`local.simulators.aliyun.signature`) before a
product sees the request:

* ``Action, Version, AccessKeyId, SignatureMethod=HMAC-SHA1, SignatureVersion=1.0,
  SignatureNonce, Timestamp (yyyy-MM-ddTHH:mm:ssZ), Signature`` are required, in the query of
  a GET or in the query and/or the ``application/x-www-form-urlencoded`` body of a POST;
  ``Format`` is optional and, as on the real gateway, defaults to **XML**;
* ``SecurityToken`` is required for access keys configured with an STS token;
* the signature is recomputed and compared.

Errors use the gateway's JSON (or XML) body ``{RequestId, HostId, Code, Message, Recommend}``
with the gateway's codes and HTTP statuses (see :data:`GATEWAY_ERRORS`).  A nonce is only
remembered once the signature has been verified, and it stays spent even if the request then
fails with a fault: a client that retries by re-sending the very same signed URL gets
``SignatureNonceUsed``, like on the real gateway.

The products are :mod:`local.simulators.ccc` and :mod:`local.simulators.dypls`.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

from local.simulators.aliyun.signature import compute_signature, string_to_sign
from local.simulators.base import LoopbackHttpSimulator, SimRequestHandler

__all__ = [
    "DEFAULT_CREDENTIALS",
    "GATEWAY_ERRORS",
    "AccessKey",
    "AliyunRpcSimulator",
    "JsonDict",
    "RpcContext",
    "RpcError",
    "RpcLogEntry",
    "new_request_id",
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


# --------------------------------------------------------------------------- small helpers


def new_request_id() -> str:
    """An Alibaba-style request id (upper-case UUID)."""
    return str(uuid.uuid4()).upper()


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


class AliyunRpcSimulator(LoopbackHttpSimulator[RpcLogEntry]):
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
    THREAD_NAME: ClassVar[str] = "aliyun-sim"

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
        super().__init__(host=host, port=port, clock=clock, request_log_size=request_log_size)
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
    def endpoint(self) -> str:
        """The RPC endpoint URL (``base_url`` + ``/``)."""
        return f"{self.base_url}/"

    def _action_fault(self, kind: str, action: str) -> dict[str, Any] | None:
        """Take an armed ``kind`` meant for every action or for ``action``."""
        return self._take_fault(kind, lambda p: p.get("action") in (None, action))

    def _expires(self, ttl_s: float, action: str) -> int:
        """Epoch seconds at which a URL issued now stops working (honours ``expire_url``)."""
        now = self.now()
        if self._action_fault("expire_url", action) is not None:
            return int(now) - 1
        return int(now + ttl_s)

    # ------------------------------------------------------------------ request handling

    def _handle(self, h: SimRequestHandler, method: str) -> None:
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
            self._log_request(entry)

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
        throttle = self._action_fault("throttle", action)
        if throttle is not None:
            status = int(throttle.get("status", 400))
            code = str(throttle.get("code") or ("ServiceUnavailable" if status == 503 else "Throttling.User"))
            message = GATEWAY_ERRORS.get(code, (status, "Request was denied due to flow control."))[1]
            raise RpcError(status, code, message)
        err = self._action_fault("error_5xx", action)
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
