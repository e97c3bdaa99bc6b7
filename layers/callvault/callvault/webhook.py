"""The webhook's core: authenticate a source, parse its event, enqueue jobs, answer.

Order of checks: unknown source (404), oversized body (413), source address not allowed
(403), missing token (401), wrong token (403), malformed event (400). Any rejection
enqueues nothing. The provider is never called here: its deadline is short (Dypls: 700 ms).
"""

from __future__ import annotations

import hmac

from callvault.errors import Forbidden, PayloadTooLarge, Unauthorized
from callvault.jobs import JobQueue
from callvault.observability import logger
from callvault.providers import InboundRequest, WebhookReply, provider_named
from callvault.sources import Source, SourceDirectory

TOKEN_HEADER = "x-webhook-token"  # noqa: S105 - a header name, not a secret


def authenticate(source: Source, request: InboundRequest) -> None:
    if len(request.body) > source.max_body_bytes:
        raise PayloadTooLarge(f"body of {len(request.body)} bytes exceeds the limit of {source.max_body_bytes}")
    if not source.allows_ip(request.source_ip):
        raise Forbidden(f"address {request.source_ip} is not allowed for this source")
    presented = request.headers.get(TOKEN_HEADER) or request.query.get("token")
    if not presented:
        raise Unauthorized("missing source token (header X-Webhook-Token or query parameter token)")
    if not hmac.compare_digest(presented.encode(), source.webhook_token.encode()):
        raise Forbidden("wrong source token")


def receive(request: InboundRequest, sources: SourceDirectory, queue: JobQueue) -> WebhookReply:
    """Handle one webhook call; raises ``RequestRejected`` for anything answered with a 4xx."""
    source = sources.get(request.source_id)
    authenticate(source, request)
    provider = provider_named(source.provider)
    assert provider is not None  # parse_source only accepts registered providers
    reply = provider.parse_webhook(source, request)
    if reply.jobs:
        queue.enqueue(reply.jobs)
    logger.info(
        "webhook accepted",
        extra={"source_id": source.id, "jobs": len(reply.jobs), "skipped": reply.skipped},
    )
    return reply
