"""S-series-style PBX API (Yeastar S-series, OpenVox UC): event reports, sessions, downloads.

What the vendor docs impose, and how this module meets it:
- The API needs a token from ``login`` (md5 of the API password) that dies after 30 minutes
  without traffic, and the PBX pushes event reports only while a token lives. The session
  keeper logs in and heartbeats on a schedule; the token is shared through ``ProviderState``.
- Every reply is HTTP 200; failure is ``{"status":"Failed","errno":"…"}``. Token errors
  (20004/20005/20006) lead to one re-login.
- A recording is downloaded with a ``random`` that lives 30 s and works once, so each
  download attempt asks for a fresh one right before the GET. A spent or stale random has no
  documented errno: any reply that is not audio counts as a refused random.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import requests

from callvault.errors import BadRequest, ConfigError, PermanentFailure, RetryKind, RetryLater
from callvault.http import CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, SYSTEM_TLS, ResponseStream, TlsSettings, unreachable
from callvault.models import FetchJob
from callvault.providers import (
    CallListing,
    DownloadStream,
    InboundRequest,
    PendingDownload,
    ProviderRuntime,
    TimeWindow,
    WebhookReply,
    json_events,
)
from callvault.providers.pbx_cdr import parse_cdr_csv
from callvault.sources import ReconcileSettings, Source
from callvault.timefmt import format_wall_clock, iso, parse_wall_clock, utc_now

PROVIDER_NAME = "pbx"

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
# Fresh randoms tried per fetch attempt before handing over to the retry workflow.
DOWNLOAD_TRIES = 3
# Error pages and refusals are small; never read more than this of a non-audio reply.
MAX_ERROR_BODY = 64 * 1024
# A CDR CSV is ~200 bytes a call: this is hundreds of thousands of calls, far beyond one window.
MAX_CDR_BYTES = 64 * 1024 * 1024
T = TypeVar("T")
ACKNOWLEDGED = {"status": "Success"}


@dataclass(frozen=True)
class PbxSettings:
    """The ``pbx:`` section of a source."""

    base_url: str
    username: str
    password_md5: str
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


def _parse_settings(raw: Mapping[str, Any], *, where: str) -> PbxSettings:
    known = {
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
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown fields {', '.join(unknown)}")
    base_url = str(raw.get("base_url", "")).rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("",):
        raise ConfigError(f"{where}: base_url must look like https://pbx-host:port, got {raw.get('base_url')!r}")
    username = raw.get("username")
    if not isinstance(username, str) or not username:
        raise ConfigError(f"{where}: username is required")
    if "password_md5" in raw:
        password_md5 = str(raw["password_md5"]).lower()
        if not re.fullmatch(r"[0-9a-f]{32}", password_md5):
            raise ConfigError(f"{where}: password_md5 must be 32 hex digits")
    elif isinstance(raw.get("password"), str) and raw["password"]:
        # The API wants the md5 hex of the password; keep only that in memory.
        password_md5 = hashlib.md5(raw["password"].encode()).hexdigest()  # noqa: S324 - vendor protocol
    else:
        raise ConfigError(f"{where}: password (or password_md5) is required")
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
    tls_verify = raw.get("tls_verify", True)
    if not isinstance(tls_verify, bool):
        raise ConfigError(f"{where}: tls_verify must be true or false")
    ca_bundle = raw.get("ca_bundle")
    if ca_bundle is not None and (not isinstance(ca_bundle, str) or "BEGIN CERTIFICATE" not in ca_bundle):
        raise ConfigError(f"{where}: ca_bundle must be PEM text (-----BEGIN CERTIFICATE-----)")
    if ca_bundle and not tls_verify:
        raise ConfigError(f"{where}: ca_bundle and tls_verify: false contradict each other")
    allowed_ip = raw.get("allowed_download_ip")
    read_timeout = raw.get("read_timeout_seconds", DEFAULT_READ_TIMEOUT)
    if isinstance(read_timeout, bool) or not isinstance(read_timeout, int | float) or not 1 <= read_timeout <= 120:
        raise ConfigError(f"{where}: read_timeout_seconds must be a number from 1 to 120")
    return PbxSettings(
        base_url=base_url,
        username=username,
        password_md5=password_md5,
        api_version=api_version,
        api_versions={str(k): str(v) for k, v in overrides.items()},
        allowed_download_ip=str(allowed_ip) if allowed_ip else None,
        login_version=str(raw["login_version"]) if raw.get("login_version") else None,
        tls=TlsSettings(verify=tls_verify, ca_bundle_pem=ca_bundle),
        read_timeout_seconds=float(read_timeout),
    )


class PbxClient:
    """The PBX API calls this project needs, with the vendor's error codes mapped to ours."""

    def __init__(self, settings: PbxSettings, http: requests.Session) -> None:
        self._settings = settings
        self._http = http

    def login(self, report_url: str | None) -> str:
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

    def download_recording(self, token: str, recording: str, random: str) -> ResponseStream:
        """Start the download; raises RandomRefused / TokenRejected when the reply is not audio."""
        query = urlencode({"recording": recording, "random": random, "token": token}, quote_via=quote)
        url = f"{self._settings.url('recording/download')}?{query}"
        try:
            response = self._http.get(url, stream=True, timeout=self._settings.timeout)
        except requests.RequestException as exc:
            raise unreachable("PBX recording download", exc) from None
        if response.status_code >= 500:
            response.close()
            raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"PBX download answered HTTP {response.status_code}")
        content_type = (response.headers.get("Content-Type") or "").lower()
        if response.status_code == 200 and not _looks_like_a_reply(content_type):
            return ResponseStream(response)
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
        try:
            with self._http.get(url, stream=True, timeout=self._settings.timeout) as response:
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
        try:
            response = self._http.post(url, json=dict(body), timeout=self._settings.timeout)
        except requests.RequestException as exc:
            raise unreachable(f"PBX {operation}", exc) from None
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
        self._state.put(self._source.id, SESSION_STATE, {"token": token, "logged_in_at": iso(utc_now())})
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
            token = _renewed(self, token)
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
        try:
            self._client.heartbeat(str(current["token"]))
        except TokenRejected:
            self.renew(str(current["token"]))
            return "re-login"
        return "heartbeat"


def report_url(webhook_base_url: str, source: Source) -> str:
    """Where the PBX pushes reports: the PBX cannot send headers, so the token rides in the query."""
    return f"{webhook_base_url}/webhooks/{source.id}?{urlencode({'token': source.webhook_token}, quote_via=quote)}"


def _text(value: Any) -> str:
    # Firmware sends strings, but numbers and nulls turn up in the wild.
    if value is None:
        return ""
    return str(value).strip()


def _report_name(report: Mapping[str, Any]) -> str:
    return _text(report.get("action") or report.get("event")).lower()


def _file_part(recording: str) -> str:
    # Some firmware reports a path (e.g. "2020/05/05/x.wav"): the file name is the last part.
    return recording.replace("\\", "/").rsplit("/", 1)[-1]


def job_from_cdr(source: Source, cdr: Mapping[str, Any]) -> FetchJob | None:
    """The job for one call record, from a NewCdr report or a CDR CSV row (the same fields):
    None when the call was not recorded. Both paths must make the same job for one call."""
    recording = _text(cdr.get("recording"))
    if not recording:
        return None  # the call was not recorded: acknowledge, nothing to fetch
    call_id = _text(cdr.get("callid") or cdr.get("call_id") or cdr.get("cdrid"))
    if not call_id:
        raise BadRequest("NewCdr report has no callid")
    file_name = _file_part(recording)
    if not file_name or file_name in (".", ".."):
        raise BadRequest(f"NewCdr report has an unusable recording name {recording!r}")
    started = _text(cdr.get("timestart"))
    try:
        call_time = parse_wall_clock(started, source.timezone)
    except ValueError:
        if started:
            raise BadRequest(f"NewCdr timestart {started!r} is not 'yyyy-mm-dd hh:mm:ss'") from None
        call_time = utc_now().astimezone(source.timezone)  # absent: file it under today
    details = {
        key: _text(cdr[key])
        for key in ("callfrom", "callto", "status", "type", "cdrid", "callduraction", "talkduraction")
        if key in cdr and cdr[key] is not None
    }
    return FetchJob(
        source_id=source.id,
        provider=PROVIDER_NAME,
        call_id=call_id,
        call_time=iso(call_time),
        locator={"recording": recording},
        file_name=file_name,
        reported_at=iso(utc_now()),
        give_up_at=iso(call_time + timedelta(days=source.retention_days)) if source.retention_days else None,
        details=details,
    )


def listing_from_cdr(source: Source, csv_bytes: bytes, window: TimeWindow) -> CallListing:
    """What a CDR CSV says: a job per recorded, settled call; rows it cannot use, and why."""
    table = parse_cdr_csv(csv_bytes)
    listing = CallListing(problems=list(table.problems), audit=csv_bytes)
    for line, row in table.rows:
        listing.calls += 1
        ended = _ended_at(row, source)
        if ended is not None and ended > window.settled_before:
            listing.deferred += 1  # its NewCdr may still be on its way; the next window overlaps
            continue
        try:
            job = job_from_cdr(source, row)
        except BadRequest as exc:
            listing.problems.append(f"line {line}: {exc.message}; skipped")
            continue
        if job is not None:
            listing.jobs.append(job)
    return listing


def _ended_at(row: Mapping[str, str], source: Source) -> datetime | None:
    try:
        started = parse_wall_clock(row.get("timestart", ""), source.timezone)
    except ValueError:
        return None
    duration = row.get("callduraction", "")
    return started + timedelta(seconds=int(duration)) if duration.isdigit() else started


class PbxProvider:
    name = PROVIDER_NAME
    # NewCdr goes out at hang-up; the PBX retries briefly, so ten minutes settle a call.
    reconcile_defaults = ReconcileSettings(wait_for_push=timedelta(minutes=10))

    def parse_settings(self, raw: Mapping[str, Any], *, where: str) -> PbxSettings:
        return _parse_settings(raw, where=where)

    def parse_webhook(self, source: Source, request: InboundRequest) -> WebhookReply:
        reports = json_events(request.body, "a JSON object (a PBX event report) or a list of them")
        jobs: list[FetchJob] = []
        skipped = 0
        for report in reports:
            job = self._job_from_report(source, report)
            if job is None:
                skipped += 1
            else:
                jobs.append(job)
        return WebhookReply(jobs=jobs, body=dict(ACKNOWLEDGED), skipped=skipped)

    def _job_from_report(self, source: Source, report: Mapping[str, Any]) -> FetchJob | None:
        name = _report_name(report)
        if not name:
            raise BadRequest("report has neither 'action' nor 'event'")
        if name != "newcdr":
            return None  # other events (extension status, call status…) carry no recording
        return job_from_cdr(source, report)

    def list_calls(self, source: Source, window: TimeWindow, runtime: ProviderRuntime) -> CallListing:
        """The CDR CSV of the window (seed 004), one job per recorded call, as NewCdr would make it."""
        settings: PbxSettings = source.settings
        client = PbxClient(settings, runtime.http.session(source.id, settings.tls))
        session = PbxSession(source, client, runtime)
        start = format_wall_clock(window.start, source.timezone)
        end = format_wall_clock(window.end, source.timezone)
        csv_bytes = session.with_token(lambda token: client.download_cdr(token, start, end))
        return listing_from_cdr(source, csv_bytes, window)

    def resolve(self, source: Source, job: FetchJob, runtime: ProviderRuntime) -> list[PendingDownload]:
        settings: PbxSettings = source.settings
        recording = job.locator.get("recording")
        if not recording:
            raise PermanentFailure("PBX job has no recording name")
        client = PbxClient(settings, runtime.http.session(source.id, settings.tls))
        session = PbxSession(source, client, runtime)
        return [PendingDownload(file_name=job.file_name, open=lambda: _open_recording(session, client, recording))]


@contextmanager
def _open_recording(session: PbxSession, client: PbxClient, recording: str) -> Iterator[DownloadStream]:
    """Fresh random, then the download at once (it lives 30 s and works once)."""
    token = session.token()
    refused = ""
    renewed = False
    for _ in range(DOWNLOAD_TRIES):
        try:
            random = client.get_random(token, recording)
            stream = client.download_recording(token, recording, random)
        except TokenRejected as exc:
            if renewed:  # a brand-new token rejected too: the PBX is in trouble, retry later
                raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"PBX rejects a fresh token (errno {exc})") from None
            token, renewed = _renewed(session, token), True
            continue
        except RandomRefused as exc:
            refused = str(exc)
            continue
        with stream:
            yield stream
        return
    raise RetryLater(
        RetryKind.LINK_EXPIRED, f"PBX refused {DOWNLOAD_TRIES} fresh download links ({refused or 'token rejected'})"
    )


def _renewed(session: PbxSession, stale_token: str) -> str:
    try:
        return session.renew(stale_token)
    except TokenRejected as exc:  # a login answering with a token error: nothing sensible to do now
        raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"PBX login failed (errno {exc})") from None


PROVIDER = PbxProvider()
