"""Alibaba's RPC signature v1.0 and its timestamps, re-implemented from the vendor's documents.

Kept independent of any client code, so the project's client cannot "agree with itself":
RFC 3986 percent-encoding over UTF-8, parameters sorted by name, ``METHOD&%2F&encode(canonical)``,
HMAC-SHA1 keyed with ``secret + "&"``, base64.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["compute_signature", "iso_utc", "percent_encode", "string_to_sign"]

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def percent_encode(text: str) -> str:
    """RFC 3986 percent-encoding over UTF-8: unreserved characters kept, the rest ``%XY``."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode("utf-8"))


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&encode(k1=v1&k2=v2...)`` over every parameter except ``Signature``."""
    canonical = "&".join(
        f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()) if k != "Signature"
    )
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical)}"


def compute_signature(method: str, params: Mapping[str, str], secret: str) -> str:
    """Base64 HMAC-SHA1 of :func:`string_to_sign`, keyed with ``secret + "&"``."""
    digest = hmac.new(f"{secret}&".encode(), string_to_sign(method, params).encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def iso_utc(epoch: float, *, millis: bool = False) -> str:
    """``2021-04-14T02:34:00Z`` (a signed ``Timestamp``), or ``...00.447Z`` with ``millis`` (event times)."""
    when = dt.datetime.fromtimestamp(epoch, dt.UTC)
    if millis:
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
