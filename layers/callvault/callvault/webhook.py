"""The webhook's core: authenticate a source, parse its event, enqueue jobs, answer.

Order of checks: unknown source (404), oversized body (413), source address not allowed
(403), missing token (401), wrong token (403), then, for sources with a signing secret, missing
signature (401) or a wrong or stale one (403), then the body: not JSON by its Content-Type
(415), too many events (413), malformed or hostile (400; see providers/events.py), and last, for
signed sources, an exact replay (409). Any rejection enqueues nothing. The provider is never
called here: its deadline is short (Dypls: 700 ms).

Signature scheme (for integrators forwarding events, e.g. CCC softphone callbacks):
``X-Callvault-Timestamp: <unix seconds>`` and
``X-Callvault-Signature: v1=<hex HMAC-SHA256(signing secret, timestamp + "." + raw body)>``;
a timestamp more than ``SIGNATURE_WINDOW`` seconds away from our clock is refused, and so is a
delivery received before (the same timestamp and body: ``SignedDeliveries``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from callvault.errors import Forbidden, PayloadTooLarge, Unauthorized
from callvault.jobs import JobQueue
from callvault.observability import logger
from callvault.providers.interface import InboundRequest, Source, WebhookReply
from callvault.signed_deliveries import SignedDeliveries
from callvault.sources import SourceDirectory

TOKEN_HEADER = "x-webhook-token"  # noqa: S105 - a header name, not a secret
TIMESTAMP_HEADER = "x-callvault-timestamp"
SIGNATURE_HEADER = "x-callvault-signature"
SIGNATURE_WINDOW = 300
# Unix seconds in ASCII digits: str.isdigit() also takes "²" or Arabic-Indic digits.
UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Callvault-Signature`` value for a body sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def _same(presented: str, expected: str) -> bool:
    """Constant-time comparison of header or query text, whatever characters it holds."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def verify_signature(secret: str, request: InboundRequest, now: float) -> int:
    """Check the request's signature; returns its timestamp (unix seconds)."""
    timestamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
    presented = request.headers.get(SIGNATURE_HEADER, "").strip()
    if not timestamp or not presented:
        raise Unauthorized(
            "missing X-Callvault-Timestamp or X-Callvault-Signature (this source requires signed events)"
        )
    if not UNIX_SECONDS.fullmatch(timestamp):
        raise Forbidden("X-Callvault-Timestamp must be unix seconds in ASCII digits")
    if abs(now - int(timestamp)) > SIGNATURE_WINDOW:
        raise Forbidden(f"X-Callvault-Timestamp is not within {SIGNATURE_WINDOW} s of the current time")
    if not _same(presented, signature(secret, timestamp, request.body)):
        raise Forbidden("wrong X-Callvault-Signature")
    return int(timestamp)


def authenticate(source: Source, request: InboundRequest, now: float) -> int | None:
    """Check size, address, token and signature; returns the signature's timestamp, if signed."""
    if len(request.body) > source.max_body_bytes:
        raise PayloadTooLarge(f"body of {len(request.body)} bytes exceeds the limit of {source.max_body_bytes}")
    if not source.allows_ip(request.source_ip):
        raise Forbidden(f"address {request.source_ip} is not allowed for this source")
    presented = request.headers.get(TOKEN_HEADER) or request.query.get("token")
    if not presented:
        raise Unauthorized("missing source token (header X-Webhook-Token or query parameter token)")
    if not _same(presented, source.webhook_token):
        raise Forbidden("wrong source token")
    if source.webhook_signing_secret:
        return verify_signature(source.webhook_signing_secret, request, now)
    return None


def receive(
    request: InboundRequest, sources: SourceDirectory, queue: JobQueue, deliveries: SignedDeliveries
) -> WebhookReply:
    """Handle one webhook call; raises ``RequestRejected`` for anything answered with a 4xx."""
    source = sources.get(request.source_id)
    signed_at = authenticate(source, request, time.time())
    reply = source.provider.parse_webhook(source, request)
    delivery = deliveries.admit(source.id, signed_at, request.body) if signed_at is not None else None
    try:
        if reply.jobs:
            queue.enqueue(reply.jobs)
    except Exception:
        if delivery is not None:
            deliveries.forget(delivery)  # the sender's retry of this request must not be a "replay"
        raise
    if reply.rejected:
        logger.error("webhook events rejected", extra={"source_id": source.id, "rejected": reply.rejected})
    logger.info(
        "webhook accepted",
        extra={
            "source_id": source.id,
            "jobs": len(reply.jobs),
            "skipped": reply.skipped,
            "rejected": len(reply.rejected),
        },
    )
    return reply
