"""The PBX's HTTP API (Yeastar S-series / OpenVox UC), served from the recordings and CDR rows it holds.

Follows the vendor documents (seeds 003 and 004, ``docs/providers.md`` section 2) including
their unpleasant parts:

* every reply is HTTP 200 with ``{"status": "Failed", "errno": "..."}`` on failure (errno is a
  *string*); the session rules are in :mod:`local.simulators.pbx.sessions`;
* the login password is the lower-case md5 hex of the API password;
* a recording random works exactly once;
* the CDR download link of the seed contains raw spaces in the query, which is accepted;
* ``Range`` on ``recording/download`` is ignored (200 and the whole file) unless the simulator
  is made with ``honour_range=True``: no vendor document says what an S-series PBX does with it
  (the documented replies come from a Boa server that sends ``Accept-Ranges: bytes`` on every
  reply, JSON ones included, which promises nothing about the API), so the default assumes the
  worst. Honoured, a range ``bytes=a-`` / ``a-b`` / ``-n`` is served 206 with ``Content-Range``
  as RFC 9110 says, and one that cannot be satisfied is 416.

Faults can be switched on for the next N matching requests with :meth:`PbxApiServer.set_fault`,
among them a redirect of any operation to another server.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from local.simulators.base import LoopbackHttpSimulator, SimRequestHandler
from local.simulators.pbx.calls import TIME_FORMAT, render_cdr_csv
from local.simulators.pbx.requests import allowed_ip, cdr_query, json_body, str_field
from local.simulators.pbx.sessions import PbxFailure, PbxSessions, Token
from local.simulators.pbx.tls import TlsFiles
from local.simulators.pbx.web import CORS, PbxRequestHandler, byte_range

__all__ = ["FAULT_KINDS", "PbxApiServer", "PbxRequestHandler", "md5_hex"]

#: Fault kinds accepted by :meth:`PbxApiServer.set_fault`.
FAULT_KINDS: tuple[str, ...] = ("slow", "error_5xx", "expire_random", "truncate", "expire_token", "redirect")

JsonDict = dict[str, Any]
RequestLine = tuple[str, str, str]

_DOWNLOAD_ENDPOINTS = ("recording/download", "cdr/download")
_CHUNK = 64 * 1024
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
)


def md5_hex(text: str) -> str:
    """Lower-case md5 hex, as the PBX wants the login password."""
    return hashlib.md5(text.encode("utf-8")).hexdigest()  # noqa: S324 - the vendor protocol demands md5


class PbxApiServer(LoopbackHttpSimulator[RequestLine]):
    """The PBX's API over the recordings and CDR rows stored with :meth:`_store_call`.

    Its :attr:`request_log` holds ``(method, path-with-query, client ip)``.
    """

    FAULT_KINDS: ClassVar[tuple[str, ...]] = FAULT_KINDS
    FAULT_PARAMS: ClassVar[Mapping[str, frozenset[str]]] = {
        "slow": frozenset({"seconds", "endpoint"}),
        "error_5xx": frozenset({"status", "endpoint"}),
        "truncate": frozenset({"fraction", "at_byte", "how", "endpoint"}),
        "redirect": frozenset({"status", "location", "endpoint"}),
    }
    COUNTERS: ClassVar[tuple[str, ...]] = _COUNTER_KEYS
    THREAD_NAME: ClassVar[str] = "pbx-sim"
    SERVER_HEADER: ClassVar[str] = f"PbxSimulator {BaseHTTPRequestHandler.sys_version}"
    HANDLER: ClassVar[type[SimRequestHandler]] = PbxRequestHandler

    def __init__(
        self,
        *,
        username: str,
        password: str,
        host: str,
        port: int,
        api_versions: tuple[str, ...],
        token_ttl: float,
        random_ttl: float,
        tls: TlsFiles | None,
        clock: Callable[[], float],
        lockout_threshold: int,
        lockout_s: float,
        cdr_random_single_use: bool,
        honour_range: bool = False,
    ) -> None:
        """See :class:`~local.simulators.pbx.PbxSimulator`, which gives every argument its default."""
        if not api_versions:
            raise ValueError("api_versions must not be empty")
        super().__init__(host=host, port=port, clock=clock)
        self.username = username
        self.password = password
        self.api_versions = tuple(api_versions)
        self.token_ttl = float(token_ttl)
        self.random_ttl = float(random_ttl)
        self.tls = tls
        self.lockout_threshold = lockout_threshold
        self.lockout_s = float(lockout_s)
        self.cdr_random_single_use = cdr_random_single_use
        self.honour_range = honour_range
        # How CDR rows become the CSV the PBX answers: the column set is not published, so tests
        # may swap in another export (other headers, a BOM, a broken last line).
        self.cdr_renderer: Callable[[list[dict[str, str]]], bytes] | None = None
        self._sessions = PbxSessions(self, self._count)
        self._recordings: dict[str, bytes] = {}
        self._cdr_rows: list[tuple[dt.datetime, dict[str, str]]] = []

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.tls.cert_path), str(self.tls.key_path))
        return ctx

    def url(self, endpoint: str, version: str | None = None) -> str:
        """Full URL of ``endpoint`` (e.g. ``"login"``) under ``version`` (default: the first one)."""
        return f"{self.base_url}/api/{version or self.api_versions[0]}/{endpoint.lstrip('/')}"

    @property
    def password_md5(self) -> str:
        """What a client must send as ``password`` in login."""
        return md5_hex(self.password)

    # ------------------------------------------------------------------ stored calls

    def recording(self, name: str) -> bytes:
        """Exact bytes of a stored recording (KeyError if unknown)."""
        with self._lock:
            return self._recordings[name]

    def delete_recording(self, name: str) -> None:
        """Remove a recording so get_random / download answer errno 10023."""
        with self._lock:
            self._recordings.pop(name, None)

    def _store_call(self, started: dt.datetime, cdr: dict[str, str], audio: bytes | None) -> None:
        """Serve ``cdr`` in the CDR export (by its naive local start time) and ``audio`` as its recording."""
        with self._lock:
            if audio is not None:
                self._recordings[cdr["recording"]] = audio
            self._cdr_rows.append((started, cdr))

    # ------------------------------------------------------------------ sessions

    def expire_all_tokens(self) -> None:
        """Make every live token expired: its next use answers errno 20006."""
        self._sessions.expire_all(self.now())

    @property
    def live_tokens(self) -> list[str]:
        """Tokens currently alive."""
        return self._sessions.live_tokens(self.now())

    @property
    def report_url(self) -> str | None:
        """Report URL of the most recently logged-in live token that registered one."""
        urls = self._sessions.live_report_urls(self.now())
        return urls[-1] if urls else None

    def _auth(self, query: dict[str, str]) -> Token:
        return self._sessions.authenticate(
            query.get("token", ""), self.now(), lambda: self._take_fault("expire_token") is not None
        )

    def _issue_random(self, kind: str, target: tuple[str, ...], tok: Token, allowedip: str) -> str:
        expired = self._take_fault("expire_random") is not None
        return self._sessions.issue_random(kind, target, tok, allowedip, self.now(), expired=expired)

    # ------------------------------------------------------------------ faults

    def set_fault(self, kind: str, count: int = 1, **params: Any) -> None:
        """Arm a fault for the next ``count`` matching requests (``count=0`` disarms it).

        * ``slow``: ``seconds`` (float, default 2.0) real delay before a download is answered.
        * ``error_5xx``: ``status`` (500-599, default 503) with a ``text/plain`` body, before
          any validation (the random is not spent).
        * ``truncate``: full Content-Length but the body stops after ``fraction`` (default 0.5)
          of it, or at byte ``at_byte`` of the file, and is broken off as ``how`` says
          (``close``, ``reset`` or ``stall``: ``local.simulators.base``); the random is spent.
        * ``expire_random``: the next randoms issued by either get_random are already expired.
        * ``expire_token``: the next authenticated requests find their token expired (20006).
        * ``redirect``: ``status`` (default 302) to ``location`` + the request's path and query.

        ``slow``, ``error_5xx`` and ``truncate`` take ``endpoint``: ``"recording/download"``
        (default), ``"cdr/download"`` or ``"any"``; ``redirect`` takes any operation too.
        """
        super().set_fault(kind, count, **params)

    def _check_fault_params(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        params = super()._check_fault_params(kind, params)
        if "endpoint" in self.FAULT_PARAMS.get(kind, ()):
            endpoints = tuple(_ROUTES) if kind == "redirect" else _DOWNLOAD_ENDPOINTS
            endpoint = params.get("endpoint", "recording/download")
            if endpoint not in (*endpoints, "any"):
                raise ValueError(f"endpoint must be one of {endpoints} or 'any'")
            params["endpoint"] = endpoint
        return params

    def _endpoint_fault(self, kind: str, endpoint: str) -> dict[str, Any] | None:
        """Take an armed ``kind`` meant for ``endpoint`` (or for ``"any"``)."""
        return self._take_fault(kind, lambda p: p.get("endpoint") in (None, "any", endpoint))

    # ------------------------------------------------------------------ dispatch

    def _handle(self, h: SimRequestHandler, method: str) -> None:
        assert isinstance(h, PbxRequestHandler)
        ip = h.client_address[0]
        parts = urlsplit(h.path)
        self._log_request((method, h.path, ip))
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
            h.send_json(PbxFailure("10004").body())
            return
        redirect = self._endpoint_fault("redirect", endpoint)
        if redirect is not None:
            # As a proxy in front of a moved API would: the same path and query, elsewhere.
            h.send_bytes(redirect["status"], b"", "text/plain", [("Location", redirect["location"] + h.path)])
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
        except PbxFailure as fail:
            if fail.counter:
                self._count(fail.counter)
            h.send_json(fail.body())

    # -- endpoints

    def _h_login(self, h: PbxRequestHandler, query: dict[str, str], ip: str) -> None:
        self._count("logins")
        now = self.now()
        self._sessions.check_not_locked(ip, now)
        body = json_body(h.body_bytes)
        username = str_field(body, "username", required=True)
        password = str_field(body, "password", required=True)
        url = str_field(body, "url", required=False)
        urltag = str_field(body, "urltag", required=False)
        # Byte-exact: an upper-case md5 is a wrong password, as on the device.
        credentials_ok = secrets.compare_digest(username, self.username) and secrets.compare_digest(
            password, md5_hex(self.password)
        )
        report_url: str | None = None
        if url and urltag == "1":
            report_url = url if "://" in url else f"http://{url}"
        value = self._sessions.log_in(ip, credentials_ok, report_url, now)
        self._count("logins_ok")
        h.send_json({"status": "Success", "token": value})

    def _h_logout(self, h: PbxRequestHandler, query: dict[str, str], ip: str) -> None:
        self._sessions.log_out(self._auth(query))
        self._count("logouts")
        h.send_json({"status": "Success"})

    def _h_heartbeat(self, h: PbxRequestHandler, query: dict[str, str], ip: str) -> None:
        self._auth(query)
        self._count("heartbeats")
        h.send_json({"status": "Success"})

    def _h_recording_random(self, h: PbxRequestHandler, query: dict[str, str], ip: str) -> None:
        tok = self._auth(query)
        try:
            body = json_body(h.body_bytes)
            name = str_field(body, "recording", required=True)
            allowedip = allowed_ip(body)
            with self._lock:
                known = name in self._recordings
            if not known:
                raise PbxFailure("10023")
        except PbxFailure as fail:
            fail.counter = "get_random_failed"
            raise
        value = self._issue_random("recording", (name,), tok, allowedip)
        self._count("get_random")
        h.send_json({"status": "Success", "recording": name, "random": value})

    def _h_cdr_random(self, h: PbxRequestHandler, query: dict[str, str], ip: str) -> None:
        tok = self._auth(query)
        try:
            body = json_body(h.body_bytes)
            extid, start, end = cdr_query(
                {k: str_field(body, k, required=True) for k in ("extid", "starttime", "endtime")}
            )
            allowedip = allowed_ip(body)
        except PbxFailure as fail:
            fail.counter = "cdr_get_random_failed"
            raise
        value = self._issue_random("cdr", (extid, start, end), tok, allowedip)
        self._count("cdr_get_random")
        h.send_json({"status": "Success", "extid": extid, "starttime": start, "endtime": end, "random": value})

    def _download_faults(self, h: PbxRequestHandler, endpoint: str) -> bool:
        """Apply ``slow`` and ``error_5xx``; True if a 5xx reply was sent."""
        slow = self._endpoint_fault("slow", endpoint)
        if slow is not None:
            time.sleep(slow["seconds"])
        err = self._endpoint_fault("error_5xx", endpoint)
        if err is not None:
            status = int(err["status"])
            reason = h.responses.get(status, ("Server Error",))[0]
            self._count("downloads_5xx")
            h.send_bytes(status, f"{status} {reason}\n".encode(), "text/plain; charset=utf-8")
            return True
        return False

    def _h_recording_download(self, h: PbxRequestHandler, query: dict[str, str], ip: str) -> None:
        if self._download_faults(h, "recording/download"):
            return
        try:
            tok = self._auth(query)
            name, value = query.get("recording", ""), query.get("random", "")
            if not name or not value:
                raise PbxFailure("10004")
            self._sessions.spend_random(value, "recording", (name,), tok, ip, self.now(), single_use=True)
            with self._lock:
                audio = self._recordings.get(name)
            if audio is None:
                raise PbxFailure("10023")
        except PbxFailure as fail:
            fail.counter = "downloads_failed"
            raise
        self._stream(
            h,
            audio,
            "audio/x-wav",
            f"attachment; filename={name}",
            "recording/download",
            ok_counter="downloads_ok",
            ranges=self.honour_range,
        )

    def _h_cdr_download(self, h: PbxRequestHandler, query: dict[str, str], ip: str) -> None:
        if self._download_faults(h, "cdr/download"):
            return
        try:
            tok = self._auth(query)
            if not all(query.get(k) for k in ("extid", "starttime", "endtime", "random")):
                raise PbxFailure("10004")
            extid, start, end = cdr_query(query)
            self._sessions.spend_random(
                query["random"], "cdr", (extid, start, end), tok, ip, self.now(), single_use=self.cdr_random_single_use
            )
        except PbxFailure as fail:
            fail.counter = "cdr_downloads_failed"
            raise
        t0, t1 = dt.datetime.strptime(start, TIME_FORMAT), dt.datetime.strptime(end, TIME_FORMAT)
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
        self,
        h: PbxRequestHandler,
        data: bytes,
        content_type: str,
        disposition: str,
        endpoint: str,
        *,
        ok_counter: str,
        ranges: bool = False,
    ) -> None:
        """Send ``data`` (the range asked for, when ``ranges``) in chunks, honouring ``truncate``."""
        start, end, status = 0, len(data), 200
        if ranges and h.headers.get("Range"):
            span = byte_range(h.headers["Range"], len(data))
            if span is None:
                self._count("ranges_unsatisfiable")
                h.send_bytes(416, b"", content_type, [("Content-Range", f"bytes */{len(data)}")])
                return
            start, end, status = span
        trunc = self._endpoint_fault("truncate", endpoint)
        limit = end if trunc is None else self._truncation_limit(trunc, start, end)
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(end - start))
        h.send_header("Content-Disposition", disposition)
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        for name, value in CORS:
            h.send_header(name, value)
        if trunc is not None:
            h.send_header("Connection", "close")
        h.end_headers()
        view = memoryview(data)
        # A complete download is counted before its last bytes go out: a client that has read
        # them must find it counted (the server thread could otherwise count it later).
        counted = False
        try:
            for offset in range(start, limit, _CHUNK):
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
            self._count("downloads_truncated")
            self._break_body(h, trunc)
