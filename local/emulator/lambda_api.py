"""Play the AWS Lambda ``Invoke`` API on loopback, backed by the :class:`FunctionRunner`.

moto cannot run a function without Docker, so a tool that calls
``boto3.client("lambda", endpoint_url=...).invoke(FunctionName=..., Payload=...)`` is pointed here
instead; it gets what Lambda would answer:

- ``POST /2015-03-31/functions/{FunctionName}/invocations``, the name being a function name, a full
  ARN or a partial ARN (``123456789012:function:name``); the only qualifier is ``$LATEST``;
- ``RequestResponse`` → 200 with the JSON result, or ``X-Amz-Function-Error: Unhandled`` and the
  Python runtime's error object; ``Event`` → 202, run in a background thread; ``DryRun`` → 204;
- Lambda's errors (``x-amzn-ErrorType`` + JSON body, as botocore parses them): unknown function or
  qualifier 404, payload that is not JSON 400, payload over the 6 MB (sync) / 1 MB (Event) limit 413.

Not emulated: versions and aliases, the rest of the Lambda API (moto serves that), ``LogType=Tail``
logs, ``ClientContext``, throttling and reserved concurrency, and, for ``Event``, the queue's
retries, maximum event age, DLQ and destinations (a failure is only logged, by the runner).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local.emulator.execution_environment import EnvironmentFailed, HandlerError
from local.emulator.function_runner import LAMBDA_MAX_SYNC_PAYLOAD_BYTES, FunctionRunner
from local.emulator.http_api import HttpRequest, HttpResponse

LOG = logging.getLogger("local.emulator.lambda_api")

# Lambda's limit for an asynchronous (Event) invocation's payload.
LAMBDA_MAX_ASYNC_PAYLOAD_BYTES = 1024 * 1024
_INVOKE_PATH = re.compile(r"/2015-03-31/functions/(?P<function>[^/]+)/invocations")
# NamespacedFunctionName of botocore's model: [arn:aws:lambda:region:][account:][function:]name[:qualifier]
_FUNCTION_NAME = re.compile(
    r"(?:arn:(?P<partition>aws[a-zA-Z-]*):lambda:(?P<region>[a-z0-9-]+):)?(?:(?P<account>\d{12}):)?"
    r"(?:function:)?(?P<name>[A-Za-z0-9_.-]+)(?::(?P<qualifier>[A-Za-z0-9$_.-]+))?"
)


def _error(status: int, code: str, message: str, message_key: str = "message") -> HttpResponse:
    """A Lambda API error: botocore reads the code from x-amzn-ErrorType, the message from the body.

    The key is the member name of the error's shape in botocore's model (``Message`` for
    ResourceNotFoundException, ``message`` for most others).
    """
    body = json.dumps({"Type": "User", message_key: message}).encode()
    return HttpResponse(status, [("x-amzn-ErrorType", code), ("Content-Type", "application/json")], body)


def _sync_payload_too_large() -> HttpResponse:
    # AWS answers RequestEntityTooLargeException, not the RequestTooLargeException of its model.
    message = f"Request must be smaller than {LAMBDA_MAX_SYNC_PAYLOAD_BYTES} bytes for the InvokeFunction operation"
    return _error(413, "RequestEntityTooLargeException", message)


def _function_error(error_type: str, message: str, stack_trace: list[str]) -> HttpResponse:
    """A failed invocation: still 200, the error object as payload, flagged by a header."""
    body = json.dumps({"errorMessage": message, "errorType": error_type, "stackTrace": stack_trace}).encode()
    headers = [("X-Amz-Function-Error", "Unhandled"), ("X-Amz-Executed-Version", "$LATEST")]
    return HttpResponse(200, [*headers, ("Content-Type", "application/json")], body)


class LambdaApiServer:
    """A ThreadingHTTPServer on loopback answering Lambda ``Invoke`` requests."""

    def __init__(
        self, functions: Mapping[str, str], region: str, account: str, port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        """Bind the socket; ``functions`` maps each function ARN to its logical id in the runner."""
        self._functions = dict(functions)
        self._region = region
        self._account = account
        self._runner: FunctionRunner | None = None
        self._server = ThreadingHTTPServer((host, port), _request_handler_class(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._idle = threading.Condition()
        self.endpoint_url = f"http://{host}:{self._server.server_address[1]}"

    @property
    def pending(self) -> int:
        """Event invocations accepted and not yet finished."""
        with self._idle:
            return self._pending

    def start(self, runner: FunctionRunner) -> None:
        """Serve requests with ``runner``."""
        self._runner = runner
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="lambda-api", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop serving, let accepted Event invocations finish (up to ``timeout``), close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        with self._idle:
            if not self._idle.wait_for(lambda: self._pending == 0, timeout):
                LOG.warning("%d Event invocation(s) still running at stop", self._pending)
        self._server.server_close()

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request (socket-independent)."""
        target = urlsplit(request.target)
        matched = _INVOKE_PATH.fullmatch(target.path)
        if request.method != "POST" or matched is None or self._runner is None:
            return _error(404, "UnknownOperationException", f"Unknown operation {request.method} {target.path}")
        if len(request.body) > LAMBDA_MAX_SYNC_PAYLOAD_BYTES:
            return _sync_payload_too_large()
        qualifier = dict(parse_qsl(target.query)).get("Qualifier")
        function_id, arn = self._resolve(unquote(matched["function"]), qualifier)
        if function_id is None:
            return _error(404, "ResourceNotFoundException", f"Function not found: {arn}", "Message")
        try:
            event = json.loads(request.body) if request.body.strip() else {}
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            return _error(400, "InvalidRequestContentException", f"Could not parse request body into json: {exc}")
        headers = {name.lower(): value for name, value in request.headers}
        invocation_type = headers.get("x-amz-invocation-type", "RequestResponse")
        if invocation_type == "RequestResponse":
            return self._invoke(function_id, event)
        if invocation_type == "Event":
            if len(request.body) > LAMBDA_MAX_ASYNC_PAYLOAD_BYTES:
                message = (
                    f"{len(request.body)} byte payload is too large for the Event invocation type "
                    f"(limit {LAMBDA_MAX_ASYNC_PAYLOAD_BYTES} bytes)"
                )
                return _error(413, "RequestEntityTooLargeException", message)
            self._invoke_in_background(function_id, event)
            return HttpResponse(202)
        if invocation_type == "DryRun":
            return HttpResponse(204)
        return _error(
            400,
            "InvalidParameterValueException",
            f"Unsupported invocation type {invocation_type!r}: use RequestResponse, Event or DryRun",
        )

    def _resolve(self, function_name: str, qualifier: str | None) -> tuple[str | None, str]:
        """The logical id a function name/ARN (and qualifier) designates, and the ARN it names."""
        parts = _FUNCTION_NAME.fullmatch(function_name)
        if parts is None:
            return None, function_name
        arn = (
            f"arn:{parts['partition'] or 'aws'}:lambda:{parts['region'] or self._region}:"
            f"{parts['account'] or self._account}:function:{parts['name']}"
        )
        qualifier = parts["qualifier"] or qualifier
        if qualifier not in (None, "$LATEST"):
            return None, f"{arn}:{qualifier}"  # no versions or aliases here
        return self._functions.get(arn), arn

    def _invoke(self, function_id: str, event: Any) -> HttpResponse:
        """A synchronous invocation, answered like the Python runtime through Lambda would."""
        assert self._runner is not None
        try:
            result = self._runner.invoke(function_id, event)
        except HandlerError as exc:  # the runner has logged it
            return _function_error(exc.error_type, exc.message, exc.stack_trace)
        except EnvironmentFailed as exc:
            return _function_error("Runtime.ExitError", str(exc), [])
        body = json.dumps(result, ensure_ascii=False).encode()
        if len(body) > LAMBDA_MAX_SYNC_PAYLOAD_BYTES:
            limit = LAMBDA_MAX_SYNC_PAYLOAD_BYTES
            message = f"Response payload size exceeded maximum allowed payload size ({limit} bytes)."
            return _function_error("Function.ResponseSizeTooLarge", message, [])
        return HttpResponse(200, [("X-Amz-Executed-Version", "$LATEST"), ("Content-Type", "application/json")], body)

    def _invoke_in_background(self, function_id: str, event: Any) -> None:
        """Run an Event invocation in its own thread; a failure is logged by the runner, no retries."""
        assert self._runner is not None
        runner = self._runner

        def run() -> None:
            try:
                runner.invoke(function_id, event)
            except Exception:
                LOG.debug("Event invocation of %s failed; Lambda would retry it twice", function_id)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

        with self._idle:
            self._pending += 1
        threading.Thread(target=run, name=f"lambda-event-{function_id}", daemon=True).start()


def _request_handler_class(api: LambdaApiServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``api`` (http.server instantiates it per request)."""

    class _LambdaRequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "callvault-local-lambda"
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                self.close_connection = True  # botocore sends Content-Length; no chunked decoding here
                response = _error(411, "LengthRequiredException", "Content-Length is required")
            elif length > LAMBDA_MAX_SYNC_PAYLOAD_BYTES:
                self._discard(length)  # so the client reads the 413 rather than a reset
                self.close_connection = True
                response = _sync_payload_too_large()
            else:
                body = self.rfile.read(length) if length else b""
                request = HttpRequest(self.command, self.path, list(self.headers.items()), body, self.client_address[0])
                response = api.handle(request)
            self.send_response(response.status)
            for name, value in [*response.headers, ("x-amzn-RequestId", str(uuid.uuid4()))]:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        def _discard(self, length: int) -> None:
            remaining = min(length, 8 * LAMBDA_MAX_SYNC_PAYLOAD_BYTES)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1024 * 1024))
                if not chunk:
                    return
                remaining -= len(chunk)

        def log_message(self, format: str, *args: Any) -> None:
            LOG.debug("lambda %s " + format, self.client_address[0], *args)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    return _LambdaRequestHandler
