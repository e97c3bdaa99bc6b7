"""The S-series PBX API (Yeastar S-series, OpenVox UC) as the PBX provider speaks it.

What the vendor docs impose, and how this module meets it:
- The API needs a token from ``login`` (md5 of the API password) that dies after 30 minutes
  without traffic, and the PBX pushes event reports only while a token lives. A scheduled
  duty logs in and heartbeats (``PbxSession.keep_alive``); the token is shared by every
  container through ``ProviderState``.
- Every reply is HTTP 200; failure is ``{"status":"Failed","errno":"…"}``. Token errors
  (20004/20005/20006) lead to one re-login.
- A recording (and a CDR CSV) is downloaded with a ``random`` that lives 30 s and works once, so
  each download asks for a fresh one right before the GET, a resumed one too. Whether
  ``recording/download`` honours ``Range`` no vendor document says (the sample replies come from
  a Boa server that advertises ``Accept-Ranges: bytes`` on every reply, JSON included); the
  transfer checks the reply's status and ``Content-Range`` and restarts on a whole file. A spent or stale random has no
  documented errno: any reply that is not what was asked for counts as a refused random.
- No call follows a redirect (``PbxClient._send``): a 3xx ends the job FAILED with the host it
  pointed at, and the login's credentials or a download's token and random go nowhere else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from callvault.errors import ConfigError, FetchError, PermanentFailure, RetryKind, RetryLater
from callvault.http import (
    CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    SYSTEM_TLS,
    ResponseStream,
    TlsSettings,
    range_header,
    refuse_redirect,
    unreachable,
)
from callvault.providers.interface import ProviderRuntime, Source
from callvault.timefmt import iso, utc_now
from callvault.validation import boolean, number, reject_unknown, text

if TYPE_CHECKING:
    # Imported where a request is made (see callvault.http): the webhook imports this module
    # to parse sources and events, and never calls a provider.
    import requests

OPERATIONS = (
    "login",
    "heartbeat",
    "logout",
    "recording/get_random",
    "recording/download",
    "cdr/get_random",
    "cdr/download",
)
API_VERSION = re.compile(r"^v\d+(\.\d+)*$")
TOKEN_ERRNOS = {"20004", "20005", "20006"}
SESSION_STATE = "pbx-session"
# Fresh randoms tried per download before the attempt is given up.
DOWNLOAD_TRIES = 3
# Error pages and refusals are small; never read more than this of a non-audio reply.
MAX_ERROR_BODY = 64 * 1024
# A CDR CSV is ~200 bytes a call: this is hundreds of thousands of calls, far beyond one window.
MAX_CDR_BYTES = 64 * 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class PbxSettings:
    """The ``pbx:`` section of a source."""

    base_url: str
    username: str
    password_md5: str | None  # None in the webhook's copy of a source
    api_version: str = "v1.1.0"
    api_versions: Mapping[str, str] = field(default_factory=dict)
    allowed_download_ip: str | None = None
    login_version: str | None = None
    tls: TlsSettings = SYSTEM_TLS
    read_timeout_seconds: float = DEFAULT_READ_TIMEOUT

    @property
    def timeout(self) -> tuple[float, float]:
        return (CONNECT_TIMEOUT, self.read_timeout_seconds)

    def url(self, operation: str) -> str:
        version = self.api_versions.get(operation, self.api_version)
        return f"{self.base_url}/api/{version}/{operation}"


class TokenRejected(Exception):
    """The PBX does not know the token (any more): log in again."""


class RandomRefused(Exception):
    """The download did not return audio: the random was spent, stale or refused."""


# The API password (or its md5): kept out of the webhook's copy of a source.
CREDENTIAL_FIELDS = frozenset({"password", "password_md5"})
SETTINGS_FIELDS = {
    "base_url",
    "username",
    "password",
    "password_md5",
    "api_version",
    "api_versions",
    "allowed_download_ip",
    "login_version",
    "tls_verify",
    "ca_bundle",
    "read_timeout_seconds",
}


def parse_settings(raw: Mapping[str, Any], *, where: str, credentials: bool = True) -> PbxSettings:
    """The ``pbx:`` section of a source; errors name ``where`` and the field.
    ``credentials=False``: the webhook's copy, without the password."""
    reject_unknown(raw, SETTINGS_FIELDS, where)
    base_url = str(raw.get("base_url", "")).rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("",):
        raise ConfigError(f"{where}: base_url must look like https://pbx-host:port, got {raw.get('base_url')!r}")
    username = text(raw, "username", where)
    password_md5 = _parse_password(raw, where=where) if credentials else None
    api_version = str(raw.get("api_version", "v1.1.0"))
    overrides = raw.get("api_versions") or {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{where}: api_versions must map operations to versions")
    for operation, version in {"*": api_version, **overrides}.items():
        if operation != "*" and operation not in OPERATIONS:
            raise ConfigError(
                f"{where}: api_versions has unknown operation {operation!r} (known: {', '.join(OPERATIONS)})"
            )
        if not API_VERSION.match(str(version)):
            raise ConfigError(f"{where}: API version {version!r} must look like v1.1.0")
    tls_verify = boolean(raw, "tls_verify", True, where)
    ca_bundle = raw.get("ca_bundle")
    if ca_bundle is not None and (not isinstance(ca_bundle, str) or "BEGIN CERTIFICATE" not in ca_bundle):
        raise ConfigError(f"{where}: ca_bundle must be PEM text (-----BEGIN CERTIFICATE-----)")
    if ca_bundle and not tls_verify:
        raise ConfigError(f"{where}: ca_bundle and tls_verify: false contradict each other")
    allowed_ip = raw.get("allowed_download_ip")
    read_timeout = number(raw, "read_timeout_seconds", DEFAULT_READ_TIMEOUT, where, low=1, high=120)
    return PbxSettings(
        base_url=base_url,
        username=username,
        password_md5=password_md5,
        api_version=api_version,
        api_versions={str(k): str(v) for k, v in overrides.items()},
        allowed_download_ip=str(allowed_ip) if allowed_ip else None,
        login_version=str(raw["login_version"]) if raw.get("login_version") else None,
        tls=TlsSettings(verify=tls_verify, ca_bundle_pem=ca_bundle),
        read_timeout_seconds=read_timeout,
    )


def _parse_password(raw: Mapping[str, Any], *, where: str) -> str:
    if "password_md5" in raw:
        password_md5 = str(raw["password_md5"]).lower()
        if not re.fullmatch(r"[0-9a-f]{32}", password_md5):
            raise ConfigError(f"{where}: password_md5 must be 32 hex digits")
        return password_md5
    if isinstance(raw.get("password"), str) and raw["password"]:
        # The API wants the md5 hex of the password; keep only that in memory.
        return hashlib.md5(raw["password"].encode()).hexdigest()  # noqa: S324 - vendor protocol
    raise ConfigError(f"{where}: password (or password_md5) is required")


class PbxClient:
    """The PBX API calls this project needs, with the vendor's error codes mapped to ours."""

    def __init__(self, settings: PbxSettings, http: requests.Session) -> None:
        self._settings = settings
        self._http = http

    def login(self, report_url: str | None) -> str:
        if self._settings.password_md5 is None:
            raise ConfigError("this copy of the source has no PBX password (the webhook's): it cannot log in")
        body: dict[str, str] = {"username": self._settings.username, "password": self._settings.password_md5}
        if report_url:
            report = urlsplit(report_url)
            body["url"] = report_url
            body["urltag"] = "1"
            body["port"] = str(report.port or (443 if report.scheme == "https" else 80))
        if self._settings.login_version:
            body["version"] = self._settings.login_version
        reply = self._call("login", body)
        token = reply.get("token")
        if not isinstance(token, str) or not token:
            raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, "PBX login succeeded without a token")
        return token

    def heartbeat(self, token: str) -> None:
        self._call("heartbeat", {}, token=token)

    def logout(self, token: str) -> None:
        self._call("logout", {}, token=token)

    def get_random(self, token: str, recording: str) -> str:
        body = {"recording": recording}
        if self._settings.allowed_download_ip:
            body["allowedip"] = self._settings.allowed_download_ip
        random = self._call("recording/get_random", body, token=token).get("random")
        if not isinstance(random, str) or not random:
            raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, "PBX get_random succeeded without a random")
        return random

    def download_recording(self, token: str, recording: str, random: str, offset: int = 0) -> ResponseStream:
        """Start the download (from byte ``offset``: a ``Range`` request, which the vendor documents
        do not mention, so the PBX may well answer with the whole file); raises RandomRefused /
        TokenRejected when the reply is not audio."""
        query = urlencode({"recording": recording, "random": random, "token": token}, quote_via=quote)
        url = f"{self._settings.url('recording/download')}?{query}"
        response = self._send("recording/download", "GET", url, stream=True, headers=range_header(offset))
        if response.status_code >= 500:
            response.close()
            raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"PBX download answered HTTP {response.status_code}")
        content_type = (response.headers.get("Content-Type") or "").lower()
        if response.status_code in (200, 206) and not _looks_like_a_reply(content_type):
            return ResponseStream(response, "PBX recording/download")
        try:
            errno = _errno_of(response.raw.read(MAX_ERROR_BODY, decode_content=True))
        finally:
            response.close()
        if errno in TOKEN_ERRNOS:
            raise TokenRejected(errno)
        if errno == "10023":
            raise PermanentFailure(f"PBX has no audio file {recording!r} (errno 10023)")
        raise RandomRefused(f"HTTP {response.status_code}, errno {errno or 'none'}")

    def download_cdr(self, token: str, start: str, end: str) -> bytes:
        """The CDR CSV of every extension's calls that started from ``start`` to ``end`` (PBX
        wall clock): a fresh single-use random, then the download at once (seed 004)."""
        window = {"extid": "all", "starttime": start, "endtime": end}
        refused = ""
        for _ in range(DOWNLOAD_TRIES):
            body = dict(window)
            if self._settings.allowed_download_ip:
                body["allowedip"] = self._settings.allowed_download_ip
            random = self._call("cdr/get_random", body, token=token).get("random")
            if not isinstance(random, str) or not random:
                raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, "PBX cdr/get_random succeeded without a random")
            # The seed's link shows the times with raw spaces; encoded, they arrive the same.
            query = urlencode({**window, "token": token, "random": random}, quote_via=quote, safe=":")
            data, status = self._read_cdr(f"{self._settings.url('cdr/download')}?{query}")
            errno = _failure_errno(data)
            if errno is None:
                if status != 200:
                    raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"PBX cdr/download answered HTTP {status}")
                return data
            if errno in TOKEN_ERRNOS:
                raise TokenRejected(errno)
            if errno:
                raise _failure("cdr/download", errno)
            refused = f"HTTP {status}, errno none"
        raise RetryLater(RetryKind.LINK_EXPIRED, f"PBX refused {DOWNLOAD_TRIES} fresh CDR download links ({refused})")

    def _read_cdr(self, url: str) -> tuple[bytes, int]:
        import requests

        response = self._send("cdr/download", "GET", url, stream=True)
        try:
            with response:
                if response.status_code >= 500:
                    raise RetryLater(
                        RetryKind.PROVIDER_UNAVAILABLE, f"PBX cdr/download answered HTTP {response.status_code}"
                    )
                data = bytearray()
                for chunk in response.iter_content(chunk_size=256 * 1024):
                    data += chunk
                    if len(data) > MAX_CDR_BYTES:
                        raise PermanentFailure(
                            f"the PBX's CDR CSV for this window exceeds {MAX_CDR_BYTES // 2**20} MiB:"
                            " reconcile shorter windows"
                        )
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) != len(data):
                    raise RetryLater(
                        RetryKind.TRANSFER_FAILED, f"PBX cdr/download broke off ({len(data)} of {declared} bytes)"
                    )
                return bytes(data), response.status_code
        except requests.RequestException as exc:
            raise unreachable("PBX cdr/download", exc) from None

    def _call(self, operation: str, body: Mapping[str, str], *, token: str | None = None) -> dict[str, Any]:
        url = self._settings.url(operation)
        if token is not None:
            url = f"{url}?{urlencode({'token': token}, quote_via=quote)}"
        response = self._send(operation, "POST", url, json=dict(body))
        if response.status_code >= 500:
            raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"PBX {operation} answered HTTP {response.status_code}")
        if response.status_code == 404:
            raise PermanentFailure(f"PBX has no {operation} endpoint at {urlsplit(url).path} (check api_version)")
        try:
            reply = response.json()
        except ValueError:
            reply = None
        if response.status_code != 200 or not isinstance(reply, dict):
            raise RetryLater(
                RetryKind.PROVIDER_UNAVAILABLE,
                f"PBX {operation} answered HTTP {response.status_code} without a JSON reply",
            )
        if str(reply.get("status", "")).lower() == "success":
            return reply
        raise _failure(operation, str(reply.get("errno", "")))

    def _send(self, operation: str, method: str, url: str, **options: Any) -> requests.Response:
        """Every request to the PBX goes out here: one timeout, one transport error mapping, and
        a redirect refused (the session follows none; a PBX that answers with one is misconfigured
        or impersonated, and the request must not be repeated elsewhere)."""
        import requests

        try:
            response = self._http.request(method, url, timeout=self._settings.timeout, **options)
        except requests.RequestException as exc:
            raise unreachable(f"PBX {operation}", exc) from None
        refuse_redirect(f"PBX {operation}", response, hint="point base_url at the address the PBX API answers on")
        return response


def _looks_like_a_reply(content_type: str) -> bool:
    return "json" in content_type or content_type.startswith("text/")


def _failure_errno(body: bytes) -> str | None:
    """The errno of a ``{"status": "Failed", ...}`` reply ("" when it names none); None when the
    body is not such a reply (a download's content)."""
    if body.lstrip()[:1] != b"{":
        return None
    try:
        reply = json.loads(body)
    except ValueError:
        return None
    if not isinstance(reply, dict) or str(reply.get("status", "")).lower() == "success":
        return None
    return str(reply.get("errno") or "")


def _errno_of(body: bytes) -> str:
    try:
        reply = json.loads(body)
    except ValueError:
        return ""
    return str(reply.get("errno", "")) if isinstance(reply, dict) else ""


def _failure(operation: str, errno: str) -> Exception:
    if errno in TOKEN_ERRNOS:
        return TokenRejected(errno)
    if errno == "20003":
        return PermanentFailure("PBX rejected the API username or password (errno 20003)")
    if errno == "20002":
        return RetryLater(
            RetryKind.THROTTLED, "PBX locked API logins from this address after failed logins (errno 20002)"
        )
    if errno == "10023":
        return PermanentFailure("PBX has no such audio file (errno 10023)")
    if errno == "10007":
        return PermanentFailure("PBX has no such call (errno 10007)")
    if errno == "10004":
        return PermanentFailure(f"PBX {operation} reports a blank parameter (errno 10004)")
    return RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"PBX {operation} failed (errno {errno or 'none'})")


class PbxSession:
    """The one API token of a PBX source, shared by every container through ProviderState."""

    def __init__(self, source: Source, client: PbxClient, runtime: ProviderRuntime) -> None:
        self._source = source
        self._client = client
        self._state = runtime.state
        self._report_url = report_url(runtime.webhook_base_url, source)

    def token(self) -> str:
        current = self._state.get(self._source.id, SESSION_STATE)
        if current and isinstance(current.get("token"), str):
            return str(current["token"])
        return self.login()

    def login(self) -> str:
        token = self._client.login(self._report_url)
        self._state.put(
            self._source.id,
            SESSION_STATE,
            {"token": token, "logged_in_at": iso(utc_now()), "report_url_sha256": _fingerprint(self._report_url)},
        )
        return token

    def renew(self, stale_token: str) -> str:
        self._state.delete_if(self._source.id, SESSION_STATE, "token", stale_token)
        return self.login()

    def with_token(self, action: Callable[[str], T]) -> T:
        """Run ``action`` with the shared token; a token the PBX no longer knows is renewed once."""
        token = self.token()
        try:
            return action(token)
        except TokenRejected:
            token = renewed(self, token)
        try:
            return action(token)
        except TokenRejected as exc:
            raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"PBX rejects a fresh token (errno {exc})") from None

    def keep_alive(self) -> str:
        """Heartbeat the shared token, or log in when there is none or it died; says which."""
        current = self._state.get(self._source.id, SESSION_STATE)
        if not current or not isinstance(current.get("token"), str):
            self.login()
            return "login"
        token = str(current["token"])
        if current.get("report_url_sha256") != _fingerprint(self._report_url):
            # The session pushes to the URL it was opened with: after a webhook token rotation (or a
            # new PublicWebhookBaseUrl) a heartbeat would keep the PBX pushing with the old token,
            # refused with 403. Close it (best effort: it dies anyway) and open one with the new URL.
            with contextlib.suppress(TokenRejected, FetchError):
                self._client.logout(token)
            self.renew(token)
            return "re-login (report URL changed)"
        try:
            self._client.heartbeat(token)
        except TokenRejected:
            self.renew(token)
            return "re-login"
        return "heartbeat"


def _fingerprint(url: str) -> str:
    """What the session item keeps of its report URL: the URL holds the webhook token."""
    return hashlib.sha256(url.encode()).hexdigest()


def report_url(webhook_base_url: str, source: Source) -> str:
    """Where the PBX pushes reports: the PBX cannot send headers, so the token rides in the query."""
    return f"{webhook_base_url}/webhooks/{source.id}?{urlencode({'token': source.webhook_token}, quote_via=quote)}"


def renewed(session: PbxSession, stale_token: str) -> str:
    """A new token in place of a stale one; a login refused with a token error is the PBX's trouble."""
    try:
        return session.renew(stale_token)
    except TokenRejected as exc:  # a login answering with a token error: nothing sensible to do now
        raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"PBX login failed (errno {exc})") from None
