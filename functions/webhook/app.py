"""Webhook function: POST /webhooks/{source_id} → authenticated, parsed, enqueued, answered.

The HTTP API routes only that one route here, so the handler reads the payload format 2.0
event itself rather than through Powertools' event handler: importing
``aws_lambda_powertools.event_handler`` loads every resolver it has (AppSync, Bedrock, …) and
their event classes, about a tenth of this function's cold start, and the webhook answers
providers with a deadline (Dypls: 700 ms).
"""

from __future__ import annotations

import base64
import binascii
import json
from functools import lru_cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext

from callvault.config import settings
from callvault.errors import BadRequest, RequestRejected
from callvault.jobs import JobQueue
from callvault.observability import logger, tracer
from callvault.providers.interface import InboundRequest
from callvault.signed_deliveries import SignedDeliveries
from callvault.sources import SourceDirectory
from callvault.webhook import SIGNATURE_WINDOW, receive


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


def inbound_request(event: dict[str, Any]) -> InboundRequest:
    """The HTTP API event (payload format 2.0) as the core sees a webhook request."""
    raw = event.get("body") or ""
    try:
        body = base64.b64decode(raw, validate=True) if event.get("isBase64Encoded") else raw.encode("utf-8")
    except (binascii.Error, UnicodeEncodeError):
        raise BadRequest("body is not valid base64 or UTF-8") from None
    return InboundRequest(
        source_id=(event.get("pathParameters") or {}).get("source_id", ""),
        body=body,
        headers={name.lower(): value for name, value in (event.get("headers") or {}).items()},
        query=dict(event.get("queryStringParameters") or {}),
        source_ip=event["requestContext"]["http"]["sourceIp"],
    )


def json_response(status_code: int, body: dict[str, Any]) -> dict[str, Any]:
    """A format 2.0 response with a compact JSON body."""
    return {
        "statusCode": status_code,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
    }


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        reply = receive(inbound_request(event), *_dependencies())
    except RequestRejected as error:
        logger.warning("webhook rejected", extra={"status": error.status_code, "reason": error.message})
        return json_response(error.status_code, {"error": error.message})
    return json_response(reply.status_code, reply.body)
