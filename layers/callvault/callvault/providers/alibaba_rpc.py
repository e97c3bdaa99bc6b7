"""Alibaba Cloud RPC-style APIs (CCC 2017-07-05, Dyplsapi 2017-05-25): signing, calls, errors.

What the vendor docs impose, and how this module meets it:
- Every request carries common parameters and a Signature v1.0: Base64 HMAC-SHA1, keyed with
  ``secret + "&"``, over ``METHOD&%2F&percentEncode(sorted k=v pairs)``, RFC 3986 encoding.
  POST sends the signed set as a form body, GET as the query.
- Gateway errors come as non-2xx JSON ``{RequestId, HostId, Code, Message, Recommend}``;
  Dyplsapi also reports business errors in a 200 body whose ``Code`` is not ``OK``. Both become
  ``RpcError``, which ``classify`` turns into the retry vocabulary of ``callvault.errors``.
- CCC 2017 may wrap ``SignatureUrl`` in extra (even typographic) quotes: ``strip_url_quotes``.

Secrets never leave this module: not the key secret, not the STS token, not the Signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from callvault.errors import ConfigError, PermanentFailure, RetryKind, RetryLater
from callvault.http import CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, refuse_redirect, unreachable
from callvault.timefmt import utc_now

if TYPE_CHECKING:
    # Imported where a request is made (see callvault.http): the webhook imports this module
    # to parse sources and events, and never calls a provider.
    import requests

SIGNATURE_METHOD = "HMAC-SHA1"
SIGNATURE_VERSION = "1.0"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
# Vendor messages end up in job reasons and logs: keep them to a readable size.
MAX_MESSAGE_CHARS = 500
# Codes the client makes up for replies the vendor did not shape as documented.
INVALID_RESPONSE = "InvalidResponse"

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
_URL_QUOTES = "\"'“”‘’"
# A value written as ""text"" in a JSON body (the CCC 2017 doc sample does this): invalid JSON.
_DOUBLED_QUOTES = re.compile(r'(:\s*)""([^"\s][^"]*)""(?=\s*[,}\]])')


# --------------------------------------------------------------------------- signing


def percent_encode(value: str) -> str:
    """RFC 3986 percent-encoding over UTF-8: only ``A-Z a-z 0-9 - _ . ~`` stay as they are."""
    return "".join(chr(byte) if byte in _UNRESERVED else f"%{byte:02X}" for byte in value.encode("utf-8"))


def canonical_query(params: Mapping[str, str]) -> str:
    """The signed parameters (all but ``Signature``) as sorted, encoded ``k=v`` pairs."""
    # Sorting the raw names by their UTF-8 bytes is the documented order; sorting the encoded
    # names would differ (e.g. "a/" sorts after "a-" raw, but "a%2F" before "a-").
    names = sorted((name for name in params if name != "Signature"), key=lambda name: name.encode("utf-8"))
    return "&".join(f"{percent_encode(name)}={percent_encode(params[name])}" for name in names)


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&percentEncode(canonical query)``, the text the HMAC is computed over."""
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def sign(method: str, params: Mapping[str, str], access_key_secret: str) -> str:
    """Signature v1.0: Base64 of HMAC-SHA1 keyed with ``secret + "&"`` over the string to sign."""
    key = (access_key_secret + "&").encode("utf-8")
    digest = hmac.new(key, string_to_sign(method, params).encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def form_encode(params: Mapping[str, str]) -> str:
    """Parameters as a query string or form body, with the same encoding the signature uses."""
    return "&".join(f"{percent_encode(name)}={percent_encode(value)}" for name, value in params.items())


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True, repr=False)
class RpcCredentials:
    """An AccessKey pair, plus the STS token when the pair is temporary."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None

    def __repr__(self) -> str:
        # The id is public (it travels in every request); the secret and the token are not.
        token = "None" if self.security_token is None else "'***'"
        return f"RpcCredentials(access_key_id={self.access_key_id!r}, access_key_secret='***', security_token={token})"


# --------------------------------------------------------------------------- errors


class RpcError(Exception):
    """A call the API refused: a non-2xx reply, or a 2xx whose body reports a failure."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int,
        request_id: str | None = None,
        recommend: str | None = None,
        host: str = "",
        action: str = "",
    ) -> None:
        self.code = code
        self.message = message
        self.http_status = http_status
        self.request_id = request_id
        self.recommend = recommend
        self.host = host
        self.action = action
        super().__init__(self._describe())

    def _describe(self) -> str:
        request = f" [RequestId {self.request_id}]" if self.request_id else ""
        return f"{self.action} on {self.host}: HTTP {self.http_status} {self.code}: {self.message}{request}"


_THROTTLED_CODES = frozenset({"Throttling", "isv.FLOW_LIMIT"})
_UNAVAILABLE_CODES = frozenset(
    {"ServiceUnavailable", "InternalError", "isp.SYSTEM_ERROR", "isp.GATEWAY_ERROR", INVALID_RESPONSE}
)
_ACCESS_KEY_CODES = frozenset(
    {"InvalidAccessKeyId.NotFound", "InvalidAccessKeyId", "SignatureDoesNotMatch", "IncompleteSignature"}
)
_PERMISSION_CODES = frozenset({"Forbidden.RAM", "isp.RAM_PERMISSION_DENY", "Forbidden", "NoPermission"})
_PARAMETER_CODES = frozenset({"MissingParameter", "InvalidParameter", "isv.INVALID_PARAMETERS"})
_NO_HINTS: Mapping[str, str] = MappingProxyType({})


def _is_throttled(error: RpcError) -> bool:
    return error.http_status == 429 or error.code in _THROTTLED_CODES or error.code.startswith("Throttling.")


def _is_unavailable(error: RpcError) -> bool:
    return error.http_status >= 500 or error.code in _UNAVAILABLE_CODES or error.code.startswith("HTTP5")


def _builtin_reason(error: RpcError) -> str | None:
    """A readable reason for the permanent errors every Alibaba RPC API shares."""
    code, host = error.code, error.host
    if code in _ACCESS_KEY_CODES:
        return f"access key rejected by {host} ({code}): check the source's access key id and secret"
    if code.startswith("InvalidSecurityToken"):
        return f"security token rejected by {host} ({code}): refresh the source's STS credentials"
    if code in _PERMISSION_CODES:
        return f"permission denied ({code}): grant the RAM user of the source's access key the right to {error.action}"
    if code in ("NotExist.Instance", "NotExists.InstanceId"):
        return f"instance does not exist ({code}): check the source's instance id and region"
    if code == "isv.POOLKEY_NOT_EXISTS":
        return f"pool key does not exist ({code}): check the source's pool key"
    if code == "OssNotOpen":
        return f"instance has no OSS storage enabled ({code}): recordings cannot be downloaded"
    if code == "isv.OUT_OF_SERVICE":
        return f"account out of service (overdue payment?) ({code})"
    if code in _PARAMETER_CODES:
        return f"{error.action} rejected its parameters ({code}): {error.message}"
    return None


def classify(
    error: RpcError,
    *,
    not_ready: frozenset[str] = frozenset(),
    permanent_hints: Mapping[str, str] = _NO_HINTS,
) -> RetryLater | PermanentFailure:
    """Whether a refused call is worth retrying, and a reason that tells ops what to do.

    ``not_ready`` lists codes that mean "not yet" for the calling provider (CCC answers
    ``NotExist.Record`` until the file is written); ``permanent_hints`` maps codes to a
    provider-specific explanation. Reasons always carry the vendor code.
    """
    where = f"{error.action} on {error.host}"
    if error.code in not_ready:
        return RetryLater(RetryKind.NOT_READY, f"{where}: not ready yet ({error.code})")
    if _is_throttled(error):
        return RetryLater(RetryKind.THROTTLED, f"{where}: rate limited ({error.code})")
    if _is_unavailable(error):
        return RetryLater(
            RetryKind.PROVIDER_UNAVAILABLE, f"{where}: provider unavailable (HTTP {error.http_status}, {error.code})"
        )
    hint = permanent_hints.get(error.code)
    if hint is not None:
        return PermanentFailure(f"{hint} ({error.code})")
    reason = _builtin_reason(error)
    if reason is None:
        reason = f"{where} failed (HTTP {error.http_status}, {error.code}): {error.message}"
    return PermanentFailure(reason)


# --------------------------------------------------------------------------- client


def utc_timestamp(moment: datetime) -> str:
    """The ``Timestamp`` parameter: UTC, ``yyyy-MM-ddTHH:mm:ssZ``."""
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def _uuid_nonce() -> str:
    return str(uuid.uuid4())


class AlibabaRpcClient:
    """Signed calls to one RPC API (one endpoint, one version) with one set of credentials."""

    def __init__(
        self,
        endpoint: str,
        version: str,
        credentials: RpcCredentials,
        http: requests.Session,
        *,
        region_id: str | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        method: str = "POST",
        clock: Callable[[], datetime] = utc_now,
        nonce: Callable[[], str] = _uuid_nonce,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"Alibaba endpoint {endpoint!r} is not an http(s) base URL")
        if method.upper() not in ("GET", "POST"):
            raise ConfigError(f"Alibaba RPC method must be GET or POST, not {method!r}")
        self.endpoint = endpoint.rstrip("/")
        self.host = parts.hostname
        self.version = version
        self.region_id = region_id
        self.method = method.upper()
        self._credentials = credentials
        self._http = http
        self._timeout = (CONNECT_TIMEOUT, read_timeout)
        self._clock = clock
        self._nonce = nonce

    def __repr__(self) -> str:
        return f"AlibabaRpcClient({self.endpoint!r}, version={self.version!r}, method={self.method!r})"

    def signed_params(self, action: str, params: Mapping[str, str]) -> dict[str, str]:
        """Common parameters, the action's parameters and the Signature over both."""
        common = self._common_params(action)
        clashes = sorted(set(common).union({"Signature"}).intersection(params))
        if clashes:
            # A caller overriding Action, AccessKeyId, … would silently sign something else.
            raise ValueError(f"{action}: parameters {clashes} are set by the client")
        signed = {**common, **params}
        signed["Signature"] = sign(self.method, signed, self._credentials.access_key_secret)
        return signed

    def call(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        """Call ``action``; the JSON reply on success, ``RpcError`` when the API refuses.

        Transport failures raise ``RetryLater`` (via ``callvault.http.unreachable``).
        """
        import requests

        signed = self.signed_params(action, params)
        encoded = form_encode(signed)
        try:
            if self.method == "POST":
                response = self._http.post(
                    self.endpoint + "/",
                    data=encoded.encode("ascii"),
                    headers={"Content-Type": FORM_CONTENT_TYPE, "Accept": "application/json"},
                    timeout=self._timeout,
                )
            else:
                response = self._http.get(
                    f"{self.endpoint}/?{encoded}", headers={"Accept": "application/json"}, timeout=self._timeout
                )
        except requests.RequestException as exc:
            # ``from None``: the requests exception text holds the signed URL for a GET.
            raise unreachable(f"{action} on {self.host}", exc) from None
        # The session follows no redirect: a 307 would re-send the signed request elsewhere.
        refuse_redirect(f"{action} on {self.host}", response, hint="check the source's endpoint")
        return self._read_reply(action, response.status_code, response.content)

    def _common_params(self, action: str) -> dict[str, str]:
        common = {
            "Action": action,
            "Version": self.version,
            "Format": "JSON",
            "AccessKeyId": self._credentials.access_key_id,
            "SignatureMethod": SIGNATURE_METHOD,
            "SignatureVersion": SIGNATURE_VERSION,
            "SignatureNonce": self._nonce(),
            "Timestamp": utc_timestamp(self._clock()),
        }
        if self._credentials.security_token:
            common["SecurityToken"] = self._credentials.security_token
        if self.region_id:
            common["RegionId"] = self.region_id
        return common

    def _read_reply(self, action: str, status: int, content: bytes) -> dict[str, Any]:
        body = parse_json_object(content)
        if not 200 <= status < 300:
            if body is None:
                raise self._error(action, f"HTTP{status}", "reply is not a JSON error body", status, {})
            code = _text(body.get("Code")) or f"HTTP{status}"
            raise self._error(action, code, _text(body.get("Message")), status, body)
        if body is None:
            raise self._error(action, INVALID_RESPONSE, "reply is not a JSON object: check the endpoint", status, {})
        business_code = body.get("Code")
        if (business_code is not None and _text(business_code) != "OK") or body.get("Success") is False:
            # Business errors in a 2xx body; CCC also states the status it means in the body.
            meant = body.get("HttpStatusCode")
            meant_status = meant if isinstance(meant, int) and not isinstance(meant, bool) else status
            code = _text(business_code) or "Success=false"
            raise self._error(action, code, _text(body.get("Message")), meant_status, body)
        return body

    def _error(self, action: str, code: str, message: str, status: int, body: Mapping[str, Any]) -> RpcError:
        return RpcError(
            code,
            self._scrub(message),
            http_status=status,
            request_id=_text(body.get("RequestId")) or None,
            recommend=self._scrub(_text(body.get("Recommend"))) or None,
            host=self.host,
            action=action,
        )

    def _scrub(self, text: str) -> str:
        # SignatureDoesNotMatch echoes the server's string to sign, which holds the STS token
        # (percent-encoded, twice): remove every form of every secret, then cap the length.
        secrets = [self._credentials.access_key_secret, self._credentials.security_token or ""]
        for form in _encoded_forms(secret for secret in secrets if secret):
            text = text.replace(form, "***")
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[:MAX_MESSAGE_CHARS] + "…"
        return text


def _encoded_forms(secrets: Iterable[str]) -> list[str]:
    """Each secret as sent, as encoded once and as encoded twice (as in a string to sign)."""
    forms: set[str] = set()
    for secret in secrets:
        once = percent_encode(secret)
        forms.update({secret, once, percent_encode(once)})
    # Longest first, so a shorter form never leaves the tail of a longer one behind.
    return sorted(forms, key=len, reverse=True)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def parse_json_object(content: bytes) -> dict[str, Any] | None:
    """The reply body as a JSON object, or None when it is not one.

    Tolerates the one malformation the CCC 2017 docs show: a value wrapped in doubled quotes
    (``"SignatureUrl":""http://…""``), which a strict parser refuses.
    """
    text = content.decode("utf-8", errors="replace")
    for candidate in (text, _DOUBLED_QUOTES.sub(r'\1"\2"', text)):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    return None


# --------------------------------------------------------------------------- reply values


def strip_url_quotes(value: str) -> str:
    """A URL without the quote characters and whitespace CCC 2017 may wrap it in.

    Removes ASCII ``"`` ``'``, typographic ``“ ” ‘ ’`` and whitespace, in any mix, at the ends
    only: quotes inside the URL (there should be none) are left for the caller to notice.
    """
    start, end = 0, len(value)
    while start < end and (value[start].isspace() or value[start] in _URL_QUOTES):
        start += 1
    while end > start and (value[end - 1].isspace() or value[end - 1] in _URL_QUOTES):
        end -= 1
    return value[start:end]


__all__ = [
    "AlibabaRpcClient",
    "RpcCredentials",
    "RpcError",
    "classify",
    "percent_encode",
    "sign",
    "string_to_sign",
    "strip_url_quotes",
]
