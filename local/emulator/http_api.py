"""Play API Gateway HTTP API (payload format 2.0) for the functions' ``HttpApi`` events.

:class:`HttpRouter` selects the route as HTTP API does (the most specific wins),
:func:`build_http_event` builds the format 2.0 event, :func:`http_response_from_result` maps the
handler's result back, and :class:`HttpApiServer` serves it all on loopback.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local.emulator.function_runner import LAMBDA_MAX_SYNC_PAYLOAD_BYTES, FunctionRunner
from local.emulator.moto_server import DEFAULT_ACCOUNT

LOG = logging.getLogger("local.emulator.http_api")

# API Gateway rejects larger request payloads with 413 before any integration runs.
HTTP_API_MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
# HTTP API passes only these bodies as text; everything else (form posts included) is base64.
TEXT_MEDIA_TYPES = frozenset({"application/json", "application/xml", "application/javascript"})


@dataclass(frozen=True)
class HttpRoute:
    """An HttpApi event: ``METHOD /path/{param}`` (or ``$default``) → function."""

    method: str
    path: str
    function_id: str

    @property
    def route_key(self) -> str:
        """The routeKey API Gateway puts in the event."""
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"


@dataclass(frozen=True)
class HttpRequest:
    """A request as received on the socket, before API Gateway turns it into an event."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str
    protocol: str = "HTTP/1.1"


@dataclass
class HttpResponse:
    """A response to write back: status, header pairs (repeats allowed), body."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


@dataclass(frozen=True)
class _CompiledRoute:
    route: HttpRoute
    pattern: re.Pattern[str]
    # Lower sorts first: literal segments beat {params}; greedy {proxy+} and ANY come last.
    specificity: tuple[int, tuple[int, ...], int]


def _compile_route(route: HttpRoute) -> _CompiledRoute:
    """Turn ``/webhooks/{source_id}`` into a regex with named groups and a specificity key."""
    if route.path == "$default":
        return _CompiledRoute(route, re.compile(r"^/.*$", re.S), (2, (), 1))
    parts: list[str] = []
    ranks: list[int] = []
    greedy = 0
    for segment in route.path.strip("/").split("/") if route.path != "/" else []:
        param = re.fullmatch(r"\{([A-Za-z0-9_.-]+)(\+?)\}", segment)
        if param and param.group(2):
            parts.append(f"(?P<{_group(param.group(1))}>.+)")
            greedy = 1
        elif param:
            parts.append(f"(?P<{_group(param.group(1))}>[^/]+)")
            ranks.append(1)
        else:
            parts.append(re.escape(segment))
            ranks.append(0)
    pattern = re.compile("^/" + "/".join(parts) + "$", re.S)
    return _CompiledRoute(route, pattern, (greedy, tuple(ranks), int(route.method == "ANY")))


def _group(name: str) -> str:
    """A regex group name for a path parameter (only word characters are allowed there)."""
    return "p_" + re.sub(r"\W", lambda m: f"_{ord(m.group(0)):x}_", name)


def _ungroup(group: str) -> str:
    """Invert :func:`_group`."""
    return re.sub(r"_([0-9a-f]+)_", lambda m: chr(int(m.group(1), 16)), group[2:])


class HttpRouter:
    """Selects the route for a request the way HTTP API does (most specific wins)."""

    def __init__(self, routes: Iterable[HttpRoute]) -> None:
        self._routes = sorted((_compile_route(r) for r in routes), key=lambda c: c.specificity)

    def match(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        """The best route for ``method`` + raw ``path`` and its decoded path parameters."""
        for compiled in self._routes:
            if compiled.route.method not in ("ANY", method) and compiled.route.path != "$default":
                continue
            found = compiled.pattern.match(path)
            if found:
                return compiled.route, {_ungroup(k): unquote(v) for k, v in found.groupdict().items()}
        return None


def is_text_body(content_type: str | None) -> bool:
    """Whether HTTP API hands this content type to Lambda as text rather than base64."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type.startswith("text/") or media_type in TEXT_MEDIA_TYPES


def build_http_event(
    request: HttpRequest, route: HttpRoute, path_parameters: Mapping[str, str], domain_name: str
) -> dict[str, Any]:
    """The API Gateway HTTP API payload format 2.0 event for one request."""
    target = urlsplit(request.target)
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        key = name.lower()
        if key == "cookie":
            # Format 2.0 moves cookies out of the headers into their own list.
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    # The headers API Gateway adds; the protocol is the local one (AWS would say https).
    headers.setdefault("x-forwarded-for", request.source_ip)
    headers.setdefault("x-forwarded-port", domain_name.rpartition(":")[2] if ":" in domain_name else "80")
    headers.setdefault("x-forwarded-proto", "http")
    headers.setdefault("x-amzn-trace-id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}")
    now = datetime.now(UTC)
    request_id = base64.b32encode(uuid.uuid4().bytes).decode()[:16]
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": target.path or "/",
        "rawQueryString": target.query,
        "headers": headers,
        "requestContext": {
            "accountId": DEFAULT_ACCOUNT,
            "apiId": "local",
            "domainName": domain_name,
            "domainPrefix": domain_name.split(".", 1)[0],
            "http": {
                "method": request.method,
                "path": unquote(target.path or "/"),
                "protocol": request.protocol,
                "sourceIp": request.source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    query = _join_repeats(parse_qsl(target.query, keep_blank_values=True))
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if request.body:
        _attach_body(event, request.body, headers.get("content-type"))
    return event


def _join_repeats(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Format 2.0 folds repeated names into one comma-separated value."""
    joined: dict[str, str] = {}
    for key, value in pairs:
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    return joined


def _attach_body(event: dict[str, Any], body: bytes, content_type: str | None) -> None:
    """Text media types go in as text; anything else (or invalid UTF-8) as base64."""
    if is_text_body(content_type):
        try:
            event["body"] = body.decode("utf-8")
            return
        except UnicodeDecodeError:
            pass
    event["body"] = base64.b64encode(body).decode("ascii")
    event["isBase64Encoded"] = True


def _json_response(status: int, payload: Any) -> HttpResponse:
    """A JSON response such as API Gateway's own errors (``{"message": "Not Found"}``)."""
    return HttpResponse(status, [("Content-Type", "application/json")], json.dumps(payload).encode())


def http_response_from_result(result: Any) -> HttpResponse:
    """Map a handler result to the HTTP response per the HTTP API format 2.0 rules.

    A dict with ``statusCode`` is a full response; anything else (a dict without it, a str,
    a list...) is serialised as a 200 JSON body. A malformed response is API Gateway's 500.
    """
    if not (isinstance(result, dict) and "statusCode" in result):
        return _json_response(200, result)
    status = result["statusCode"]
    body = result.get("body")
    if (
        not isinstance(status, int)
        or isinstance(status, bool)
        or not 100 <= status <= 599
        or (body is not None and not isinstance(body, str))
    ):
        LOG.error(
            "malformed HTTP API response (statusCode %r, body %s): API Gateway answers 500", status, type(body).__name__
        )
        return _json_response(500, {"message": "Internal Server Error"})
    text = body or ""
    try:
        payload = base64.b64decode(text, validate=True) if result.get("isBase64Encoded") else text.encode()
    except binascii.Error:
        LOG.error("HTTP API response claims isBase64Encoded but its body is not base64: API Gateway answers 500")
        return _json_response(500, {"message": "Internal Server Error"})
    headers = [(str(name), _header_value(value)) for name, value in (result.get("headers") or {}).items()]
    headers.extend(("Set-Cookie", str(cookie)) for cookie in result.get("cookies") or [])
    return HttpResponse(status, headers, payload)


def _header_value(value: Any) -> str:
    """Header values may come back as numbers or booleans; API Gateway stringifies them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _FrontEndServer(ThreadingHTTPServer):
    # Python's default listen backlog (5) makes a burst of ~24 webhook clients retry SYNs for ~1 s.
    request_queue_size = 128


class HttpApiServer:
    """A ThreadingHTTPServer on loopback that routes requests as an HTTP API would."""

    def __init__(self, routes: Iterable[HttpRoute], port: int = 0, host: str = "127.0.0.1") -> None:
        self.routes = list(routes)
        self._router = HttpRouter(self.routes)
        self._runner: FunctionRunner | None = None
        self._server = _FrontEndServer((host, port), _request_handler_class(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.port = int(self._server.server_address[1])
        self.base_url = f"http://{host}:{self.port}"

    def start(self, runner: FunctionRunner) -> None:
        """Serve requests with ``runner`` (the socket is bound from construction on)."""
        self._runner = runner
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="http-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Route one request, invoke the function and shape its result (socket-independent)."""
        if len(request.body) > HTTP_API_MAX_PAYLOAD_BYTES:
            return _json_response(413, {"message": "Request Entity Too Large"})
        path = urlsplit(request.target).path or "/"
        matched = self._router.match(request.method, path)
        if matched is None or self._runner is None:
            return _json_response(404, {"message": "Not Found"})
        route, parameters = matched
        # domainName is the host the client called, as API Gateway reports it.
        host = next((value for name, value in request.headers if name.lower() == "host"), f"127.0.0.1:{self.port}")
        event = build_http_event(request, route, parameters, host)
        if len(json.dumps(event)) > LAMBDA_MAX_SYNC_PAYLOAD_BYTES:
            LOG.warning("%s: event exceeds Lambda's 6 MB payload limit; AWS would fail this request", route.route_key)
        try:
            result = self._runner.invoke(route.function_id, event)
        except Exception:
            return _json_response(500, {"message": "Internal Server Error"})
        return http_response_from_result(result)


def _request_handler_class(api: HttpApiServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``api`` (http.server instantiates it per request)."""

    class _ApiRequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "callvault-local-apigw"
        # Headers and body go out in separate writes; with Nagle on, delayed ACKs add ~40 ms a reply.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            body = self._read_body()
            if body is None:
                response = _json_response(413, {"message": "Request Entity Too Large"})
                self.close_connection = True
            else:
                request = HttpRequest(
                    method=self.command,
                    target=self.path,
                    headers=list(self.headers.items()),
                    body=body,
                    source_ip=self.client_address[0],
                    protocol=self.request_version,
                )
                response = api.handle(request)
            self._write(response)

        def _read_body(self) -> bytes | None:
            """The request body, or None when it exceeds the API Gateway limit."""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return self._read_chunked()
            length = int(self.headers.get("Content-Length") or 0)
            if length > HTTP_API_MAX_PAYLOAD_BYTES:
                self._discard(length)
                return None
            return self.rfile.read(length) if length else b""

        def _discard(self, length: int) -> None:
            """Read and drop an oversized body, so the client gets the 413 instead of a reset."""
            remaining = min(length, 8 * HTTP_API_MAX_PAYLOAD_BYTES)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1024 * 1024))
                if not chunk:
                    return
                remaining -= len(chunk)

        def _read_chunked(self) -> bytes | None:
            """Decode a chunked body, giving up past the payload limit."""
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > HTTP_API_MAX_PAYLOAD_BYTES:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()

        def _write(self, response: HttpResponse) -> None:
            self.send_response(response.status)
            names = {name.lower() for name, _ in response.headers}
            for name, value in response.headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            if "content-type" not in names and response.body:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        def log_message(self, format: str, *args: Any) -> None:
            LOG.debug("http %s " + format, self.client_address[0], *args)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    return _ApiRequestHandler
