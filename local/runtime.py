"""Drive the real Lambda handler modules in-process, the way the AWS services would.

- :class:`FunctionRunner` imports each handler from its source directory and invokes it with a
  Lambda-like context;
- :class:`HttpApiServer` plays API Gateway HTTP API (payload format 2.0) for ``HttpApi`` events;
- :class:`QueuePoller` plays the Lambda SQS event source mapping (batches, partial failures);
- :class:`Scheduler` plays EventBridge schedules.

Nothing here knows about the callvault template: :mod:`local.stack` reads routes, mappings and
timers from the template and the deployed stack and hands them over.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import importlib.util
import json
import logging
import queue
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

LOG = logging.getLogger("local.runtime")

Handler = Callable[[Any, Any], Any]

# API Gateway rejects larger request payloads with 413 before any integration runs.
HTTP_API_MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
# Lambda's synchronous invocation limit: a bigger event would fail in AWS even if accepted here.
LAMBDA_MAX_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024
# HTTP API passes only these bodies as text; everything else (form posts included) is base64.
TEXT_MEDIA_TYPES = frozenset({"application/json", "application/xml", "application/javascript"})
DEFAULT_ACCOUNT = "123456789012"
SQS_RECEIVE_MAX = 10


# --------------------------------------------------------------------------------------------
# What the stack hands over
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionSpec:
    """One deployed function: configuration read from moto, code from the source tree."""

    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    timeout: int
    memory_mb: int
    layer_dirs: tuple[Path, ...]
    environment: Mapping[str, str]


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
class QueueMapping:
    """An SQS event source mapping, taken out of moto and polled here instead."""

    mapping_id: str
    function_id: str
    queue_arn: str
    queue_url: str
    batch_size: int = 10
    batching_window_seconds: float = 0.0
    report_batch_item_failures: bool = False


@dataclass(frozen=True)
class ScheduleSpec:
    """A Schedule/ScheduleV2 event of a function."""

    function_id: str
    event_id: str
    kind: str
    expression: str
    interval_seconds: float | None
    input: str | None = None
    resource_arn: str = ""


def merge_environments(
    environments: Mapping[str, Mapping[str, str]], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Union of all functions' variables (they share one process environment) plus overrides.

    Raises ValueError when two functions give one variable different values, since in-process
    they cannot both be right; an override settles such a conflict on purpose.
    """
    overrides = overrides or {}
    merged: dict[str, str] = {}
    owners: dict[str, str] = {}
    conflicts: list[str] = []
    for function_id, variables in environments.items():
        for key, value in variables.items():
            if key in overrides:
                continue
            if key in merged and merged[key] != value:
                conflicts.append(f"{key} ({owners[key]}={merged[key]!r}, {function_id}={value!r})")
                continue
            merged.setdefault(key, value)
            owners.setdefault(key, function_id)
    if conflicts:
        raise ValueError("functions disagree on environment variables: " + "; ".join(conflicts))
    merged.update(overrides)
    return merged


_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


def parse_rate_seconds(expression: str) -> float | None:
    """Seconds between runs of a ``rate(...)`` expression; None for cron/at expressions."""
    match = _RATE.match(expression.strip())
    if not match:
        return None
    return float(int(match.group(1)) * _RATE_UNITS[match.group(2).rstrip("s")])


# --------------------------------------------------------------------------------------------
# Invoking handlers
# --------------------------------------------------------------------------------------------


class LambdaContext:
    """The attributes of the Python runtime's context object that handlers and Powertools read."""

    def __init__(self, spec: FunctionSpec, request_id: str) -> None:
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        # The Python runtime hands this over as a string (it comes from an env variable).
        self.memory_limit_in_mb = str(spec.memory_mb)
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline = time.monotonic() + spec.timeout

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's configured Timeout."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class Invocation:
    """A finished invocation, kept for tests and the demo log."""

    function_id: str
    request_id: str
    duration: float
    error: str | None = None


def load_handler(spec: FunctionSpec, instance: int = 0) -> tuple[ModuleType, Handler]:
    """Import ``spec.handler`` (``module.function``) from the function's source directory.

    Every load is a fresh module under a unique name: several functions have an ``app.py``,
    and each execution environment (``instance``) needs its own module globals. The code
    directory is on sys.path only during the import, so sibling modules resolve as in Lambda.
    """
    module_path, _, attribute = spec.handler.rpartition(".")
    relative = Path(*module_path.split("."))
    file = spec.code_dir / relative.with_suffix(".py")
    if not file.is_file():
        file = spec.code_dir / relative / "__init__.py"
    if not module_path or not file.is_file():
        raise ImportError(f"{spec.logical_id}: handler {spec.handler!r} not found under {spec.code_dir}")
    name = f"_local_function_{spec.logical_id}_{instance}_{module_path.replace('.', '_')}"
    module_spec = importlib.util.spec_from_file_location(name, file)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    sys.path.insert(0, str(spec.code_dir))
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(str(spec.code_dir))
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise ImportError(f"{spec.logical_id}: {file} has no callable {attribute!r}")
    return module, handler


def clear_module_caches(directories: Iterable[Path]) -> list[str]:
    """Empty the ``functools`` caches of every module loaded from under ``directories``.

    Layer modules stay imported for the whole process (tests hold references to their
    classes), but a cache such as "settings read from the environment once" must not carry
    another stack's (or a unit test's) configuration into this one. Returns what it cleared.
    """
    roots = [directory.resolve() for directory in directories]
    cleared = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file or not any(Path(file).resolve().is_relative_to(root) for root in roots):
            continue
        for attribute, value in list(vars(module).items()):
            if callable(getattr(value, "cache_clear", None)) and getattr(value, "__module__", None) == name:
                value.cache_clear()
                cleared.append(f"{name}.{attribute}")
    return cleared


class FunctionRunner:
    """Holds each function's execution environments and invokes handlers in them.

    Like Lambda, an environment (a separately imported handler module, with its own globals
    such as a Powertools resolver or BatchProcessor) runs one invocation at a time; a function
    has ``environments`` of them, and a further concurrent invocation waits for a free one.
    Layer modules (``callvault``) are shared by all environments of the process.
    """

    def __init__(self, specs: Iterable[FunctionSpec], region: str, environments: int = 1) -> None:
        self.specs = {spec.logical_id: spec for spec in specs}
        self.region = region
        self.environments = max(1, environments)
        self._pools: dict[str, queue.Queue[Handler]] = {}
        self._modules: list[str] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self.invocations: collections.deque[Invocation] = collections.deque(maxlen=10_000)

    def import_dirs(self) -> list[Path]:
        """Layer directories of all functions, in first-seen order (go on sys.path)."""
        seen: dict[Path, None] = {}
        for spec in self.specs.values():
            for directory in spec.layer_dirs:
                seen.setdefault(directory, None)
        return list(seen)

    def load_handlers(self) -> None:
        """Import every handler module once per environment (after env and sys.path are set).

        Layer modules imported earlier in this process (by tests, or a previous stack) keep
        their identity, but their ``functools`` caches are emptied first, since a cold Lambda
        environment would not have them either.
        """
        clear_module_caches(self.import_dirs())
        for spec in self.specs.values():
            pool: queue.Queue[Handler] = queue.Queue()
            for instance in range(self.environments):
                module, handler = load_handler(spec, instance)
                self._modules.append(module.__name__)
                pool.put(handler)
            self._pools[spec.logical_id] = pool

    def unload_handlers(self) -> None:
        """Forget the handler modules (and layer caches) so a later stack starts afresh."""
        for name in self._modules:
            sys.modules.pop(name, None)
        clear_module_caches(self.import_dirs())
        self._modules.clear()
        self._pools.clear()

    @property
    def in_flight(self) -> int:
        """Invocations currently running or waiting for an environment."""
        with self._lock:
            return self._in_flight

    @property
    def errors(self) -> list[Invocation]:
        """Invocations that raised."""
        return [record for record in list(self.invocations) if record.error]

    def invoke(self, function_id: str, event: Any) -> Any:
        """Run one handler with ``event`` in a free environment; log and re-raise its exception."""
        pool = self._pools.get(function_id)
        if pool is None:
            raise KeyError(f"no loaded function {function_id!r}; have {sorted(self._pools)}")
        with self._lock:
            self._in_flight += 1
        try:
            handler = pool.get()
            try:
                return self._run(function_id, handler, event)
            finally:
                pool.put(handler)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _run(self, function_id: str, handler: Handler, event: Any) -> Any:
        """Invoke with a fresh context; record the outcome and flag Timeout overruns."""
        spec = self.specs[function_id]
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        error: str | None = None
        try:
            return handler(event, LambdaContext(spec, request_id))
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            LOG.exception("%s invocation %s failed", function_id, request_id)
            raise
        finally:
            duration = time.monotonic() - started
            if duration > spec.timeout:
                LOG.warning(
                    "%s took %.1fs, beyond its %ss Timeout: Lambda would have stopped it",
                    function_id,
                    duration,
                    spec.timeout,
                )
            self.invocations.append(Invocation(function_id, request_id, duration, error))


# --------------------------------------------------------------------------------------------
# API Gateway HTTP API (payload format 2.0)
# --------------------------------------------------------------------------------------------


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


class HttpApiServer:
    """A ThreadingHTTPServer on loopback that routes requests as an HTTP API would."""

    def __init__(self, routes: Iterable[HttpRoute], port: int = 0, host: str = "127.0.0.1") -> None:
        self.routes = list(routes)
        self._router = HttpRouter(self.routes)
        self._runner: FunctionRunner | None = None
        self._server = ThreadingHTTPServer((host, port), _request_handler_class(self))
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


# --------------------------------------------------------------------------------------------
# SQS event source mapping
# --------------------------------------------------------------------------------------------


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One record of a Lambda SQS event, from a ReceiveMessage message."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": {
            name: _lambda_message_attribute(value) for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _lambda_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """SQS API attribute shape → the camel-cased shape Lambda puts in records."""
    converted: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues") or []),
        "binaryListValues": [base64.b64encode(item).decode() for item in value.get("BinaryListValues") or []],
        "dataType": value.get("DataType", "String"),
    }
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        converted["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return converted


def failed_message_ids(result: Any, batch_ids: list[str]) -> set[str]:
    """Which messages a ReportBatchItemFailures response marks failed, per Lambda's rules.

    None, ``{}`` and an empty/null ``batchItemFailures`` mean complete success; an identifier
    that is missing, empty or not in the batch makes the whole batch a failure.
    """
    if result is None:
        return set()
    if not isinstance(result, dict):
        LOG.warning("SQS handler returned %s, not a batch response: whole batch fails", type(result).__name__)
        return set(batch_ids)
    failures = result.get("batchItemFailures") or []
    failed: set[str] = set()
    for item in failures if isinstance(failures, list) else [failures]:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not identifier or identifier not in batch_ids:
            LOG.warning("invalid batchItemFailures entry %r: whole batch fails", item)
            return set(batch_ids)
        failed.add(identifier)
    return failed


class QueuePoller:
    """Long-polls one queue and invokes the mapped function, as the Lambda SQS poller does.

    Successful messages are deleted; failed ones are left for the queue's visibility timeout
    to redeliver (and its redrive policy to move to the DLQ — moto applies that on receive).
    """

    def __init__(
        self,
        mapping: QueueMapping,
        runner: FunctionRunner,
        sqs: Any,
        region: str,
        redelivery_delay: int | None = None,
        wait_seconds: int = 1,
    ) -> None:
        self.mapping = mapping
        self._runner = runner
        self._sqs = sqs
        self._region = region
        self._redelivery_delay = redelivery_delay
        self._wait_seconds = wait_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Poll in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name=f"sqs-{self.mapping.mapping_id}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to finish after its current poll (at most ``wait_seconds``)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=self._wait_seconds + 30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                if self._stop.is_set():
                    return
                LOG.exception("poller %s failed; retrying", self.mapping.mapping_id)
                self._stop.wait(1.0)

    def poll_once(self) -> int:
        """Receive one batch and process it; return the number of messages received."""
        messages = self._receive_batch()
        if messages:
            self._process(messages)
        return len(messages)

    def _receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        reply = self._sqs.receive_message(
            QueueUrl=self.mapping.queue_url,
            MaxNumberOfMessages=min(SQS_RECEIVE_MAX, count),
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = reply.get("Messages", [])
        return messages

    def _receive_batch(self) -> list[dict[str, Any]]:
        """Long-poll for a first message, then fill the batch up to BatchSize/batching window."""
        batch = self._receive(self.mapping.batch_size, self._wait_seconds)
        deadline = time.monotonic() + self.mapping.batching_window_seconds
        while batch and len(batch) < self.mapping.batch_size and not self._stop.is_set():
            more = self._receive(self.mapping.batch_size - len(batch), 0)
            if more:
                batch.extend(more)
            elif time.monotonic() >= deadline:
                break
            else:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return batch

    def _process(self, messages: list[dict[str, Any]]) -> None:
        """Invoke the function with the batch and acknowledge what succeeded."""
        records = [sqs_record(m, self.mapping.queue_arn, self._region) for m in messages]
        ids = [m["MessageId"] for m in messages]
        try:
            result = self._runner.invoke(self.mapping.function_id, {"Records": records})
        except Exception:
            failed = set(ids)  # traceback already logged by the runner; nothing is deleted
        else:
            failed = failed_message_ids(result, ids) if self.mapping.report_batch_item_failures else set()
        self._delete([m for m in messages if m["MessageId"] not in failed])
        if failed and self._redelivery_delay is not None:
            self._delay([m for m in messages if m["MessageId"] in failed])

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), SQS_RECEIVE_MAX):
            chunk = messages[start : start + SQS_RECEIVE_MAX]
            reply = self._sqs.delete_message_batch(
                QueueUrl=self.mapping.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            for failure in reply.get("Failed", []):
                LOG.warning("could not delete message from %s: %s", self.mapping.queue_url, failure)

    def _delay(self, messages: list[dict[str, Any]]) -> None:
        """Make failed messages visible again sooner than the queue's visibility timeout."""
        for start in range(0, len(messages), SQS_RECEIVE_MAX):
            chunk = messages[start : start + SQS_RECEIVE_MAX]
            self._sqs.change_message_visibility_batch(
                QueueUrl=self.mapping.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": self._redelivery_delay}
                    for i, m in enumerate(chunk)
                ],
            )


# --------------------------------------------------------------------------------------------
# EventBridge schedules
# --------------------------------------------------------------------------------------------


def scheduled_event(spec: ScheduleSpec, region: str, account: str) -> Any:
    """The payload a schedule delivers: its ``Input`` if set, else a "Scheduled Event"."""
    if spec.input is not None:
        return json.loads(spec.input)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler" if spec.kind == "ScheduleV2" else "aws.events",
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [spec.resource_arn] if spec.resource_arn else [],
        "detail": {},
    }


class Scheduler:
    """Fires every schedule once at start, then every interval, in one thread."""

    def __init__(
        self,
        specs: Iterable[ScheduleSpec],
        runner: FunctionRunner,
        region: str,
        interval_override: float | None = None,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        self.specs = list(specs)
        self._runner = runner
        self._region = region
        self._account = account
        self._override = interval_override
        self._stop = threading.Event()
        self._startup_done = threading.Event()
        self._thread: threading.Thread | None = None

    def interval(self, spec: ScheduleSpec) -> float | None:
        """Seconds between runs: the override, else the template's rate (None: start only)."""
        return self._override if self._override is not None else spec.interval_seconds

    @property
    def startup_pending(self) -> bool:
        """True while the start-up round has not finished."""
        return self._thread is not None and not self._startup_done.is_set()

    def start(self) -> None:
        """Start the timer thread; cron/at schedules without an override run only at start."""
        for spec in self.specs:
            if self.interval(spec) is None:
                LOG.info("%s (%s) runs at start and on demand only", spec.event_id, spec.expression)
        self._thread = threading.Thread(target=self._run, name="schedules", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer thread (an invocation in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def fire(self, spec: ScheduleSpec) -> Any:
        """Invoke one schedule's function now; return its result."""
        return self._runner.invoke(spec.function_id, scheduled_event(spec, self._region, self._account))

    def run_all_now(self, function_id: str | None = None) -> dict[str, Any]:
        """Fire every schedule (of ``function_id`` only, if given) once in the caller's thread;
        return each result by event id.

        Like EventBridge, one failing target does not stop the others: a handler's exception
        is logged, recorded in the runner's invocations and returned as that schedule's value.
        """
        results: dict[str, Any] = {}
        for spec in self.specs:
            if function_id is not None and spec.function_id != function_id:
                continue
            try:
                results[spec.event_id] = self.fire(spec)
            except Exception as error:
                results[spec.event_id] = error
        return results

    def _fire_logged(self, spec: ScheduleSpec) -> None:
        # The runner has logged the traceback; EventBridge would simply fire again next time.
        with contextlib.suppress(Exception):
            self.fire(spec)

    def _run(self) -> None:
        due: dict[str, float] = {}
        for spec in self.specs:
            if self._stop.is_set():
                break
            self._fire_logged(spec)
            interval = self.interval(spec)
            if interval is not None:
                due[spec.event_id] = time.monotonic() + interval
        self._startup_done.set()
        by_id = {spec.event_id: spec for spec in self.specs}
        while due and not self._stop.is_set():
            event_id = min(due, key=due.__getitem__)
            if self._stop.wait(max(0.0, due[event_id] - time.monotonic())):
                break
            self._fire_logged(by_id[event_id])
            interval = self.interval(by_id[event_id])
            due[event_id] = max(due[event_id] + (interval or 0.0), time.monotonic())
