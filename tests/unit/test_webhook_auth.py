"""Webhook authentication: token, address allowlist, size limit and the optional HMAC signature."""

from __future__ import annotations

import pytest

from callvault.errors import Forbidden, PayloadTooLarge, Unauthorized
from callvault.providers.interface import InboundRequest
from callvault.sources import parse_source
from callvault.webhook import authenticate, signature
from tests.conftest import ccc_source_document

SECRET = "forwarder-signing-secret-42"
SIGNED = parse_source(ccc_source_document(webhook_signing_secret=SECRET, allowed_ips=["10.0.0.0/8"]))
TOKEN = SIGNED.webhook_token
NOW = 1_767_225_600.0  # the clock every request here is checked against


def request(body: bytes = b"{}", ip: str = "10.1.2.3", **headers: str) -> InboundRequest:
    return InboundRequest(source_id=SIGNED.id, body=body, headers=headers, query={}, source_ip=ip)


def check(inbound: InboundRequest) -> int | None:
    return authenticate(SIGNED, inbound, NOW)


def signed_headers(body: bytes, at: float = NOW) -> dict[str, str]:
    timestamp = str(int(at))
    return {
        "x-webhook-token": TOKEN,
        "x-callvault-timestamp": timestamp,
        "x-callvault-signature": signature(SECRET, timestamp, body),
    }


def test_a_signed_request_with_the_token_passes() -> None:
    check(request(b'{"contactId":"1"}', **signed_headers(b'{"contactId":"1"}')))


def test_the_signature_covers_the_body() -> None:
    with pytest.raises(Forbidden, match="wrong X-Callvault-Signature"):
        check(request(b'{"contactId":"2"}', **signed_headers(b'{"contactId":"1"}')))


def test_an_old_signed_request_is_a_replay() -> None:
    with pytest.raises(Forbidden, match="within 300 s"):
        check(request(b"{}", **signed_headers(b"{}", at=NOW - 301)))


def test_a_signing_source_refuses_unsigned_requests() -> None:
    with pytest.raises(Unauthorized, match="requires signed events"):
        check(request(b"{}", **{"x-webhook-token": TOKEN}))


def test_token_and_address_and_size_come_first() -> None:
    with pytest.raises(Unauthorized, match="missing source token"):
        check(request())
    with pytest.raises(Forbidden, match="wrong source token"):
        check(request(**{"x-webhook-token": "nope"}))
    with pytest.raises(Forbidden, match="not allowed"):
        check(request(ip="192.0.2.1", **signed_headers(b"{}")))
    with pytest.raises(PayloadTooLarge):
        check(request(b"x" * (SIGNED.max_body_bytes + 1), **signed_headers(b"")))
