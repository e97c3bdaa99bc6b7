"""Webhook function: POST /webhooks/{source_id} → authenticated, parsed, enqueued, answered."""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Any

import boto3
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from callvault.config import settings
from callvault.errors import RequestRejected
from callvault.jobs import JobQueue
from callvault.observability import logger, tracer
from callvault.providers.interface import InboundRequest
from callvault.signed_deliveries import SignedDeliveries
from callvault.sources import SourceDirectory
from callvault.webhook import SIGNATURE_WINDOW, receive

app = APIGatewayHttpResolver()


@lru_cache(maxsize=1)
def _dependencies() -> tuple[SourceDirectory, JobQueue, SignedDeliveries]:
    config = settings()
    return (
        # Only the webhook's copies of the sources: this function faces the internet, so it
        # never holds provider credentials (and IAM lets it read nothing else).
        SourceDirectory(boto3.client("secretsmanager"), config.webhook_secret_prefix, credentials=False),
        JobQueue(boto3.client("sqs"), config.fetch_queue_url),
        SignedDeliveries(lambda: boto3.resource("dynamodb").Table(config.ledger_table), SIGNATURE_WINDOW),
    )


@app.post("/webhooks/<source_id>")
def post_event(source_id: str) -> Response:
    event = app.current_event
    raw = event.body or ""
    body = base64.b64decode(raw) if event.is_base64_encoded else raw.encode("utf-8")
    request = InboundRequest(
        source_id=source_id,
        body=body,
        headers={name.lower(): value for name, value in (event.headers or {}).items()},
        query=dict(event.query_string_parameters or {}),
        source_ip=event.request_context.http.source_ip,
    )
    sources, queue, deliveries = _dependencies()
    reply = receive(request, sources, queue, deliveries)
    return Response(status_code=reply.status_code, content_type=content_types.APPLICATION_JSON, body=reply.body)


@app.exception_handler(RequestRejected)
def rejected(error: RequestRejected) -> Response:
    logger.warning("webhook rejected", extra={"status": error.status_code, "reason": error.message})
    return Response(
        status_code=error.status_code, content_type=content_types.APPLICATION_JSON, body={"error": error.message}
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
