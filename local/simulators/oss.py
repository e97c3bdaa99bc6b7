"""OSS-style file server for the download URLs the Alibaba simulators hand out.

Objects are served at path-style signed URLs (real OSS uses ``bucket.oss-region.aliyuncs.com``
hosts; on loopback the bucket goes into the path)::

    http://127.0.0.1:P/{bucket}/{key}?Expires=<epoch>&OSSAccessKeyId=<id>&Signature=<base64, url-encoded>

The signature is OSS's V1 query-string signature, ``base64(HMAC-SHA1(secret,
"GET\\n\\n\\n{Expires}\\n{x-oss-* headers}/{bucket}/{key}"))``, so a GET-signed URL does not
work for HEAD (the verb is signed), nor with an ``x-oss-*`` header it was not signed with (every
such header is signed, one ``name:value`` line each, sorted), as on OSS.  Replies follow OSS:

* expired (checked first) -> 403 ``AccessDenied`` "Request has expired." with ``Expires`` and
  ``ServerTime``; unknown ``OSSAccessKeyId`` -> 403 ``InvalidAccessKeyId``; bad signature ->
  403 ``SignatureDoesNotMatch`` (with OSS's ``StringToSign`` element); no signature at all ->
  403 ``AccessDenied`` (private bucket); unknown key, or an object not yet "written"
  (``available_at`` in the future) -> 404 ``NoSuchKey``.  Error bodies are XML.
* success: 200, ``Content-Length``, ``Content-Type``, ``ETag`` (quoted upper-case md5),
  ``Content-MD5``, ``Last-Modified``, ``x-oss-request-id``, streamed in 64 KiB chunks.
* ``Range`` (OSS's "Use HTTP Range requests to get OSS resources in segments"): a valid single
  range (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``, within ``0..size-1``) is answered 206 with
  ``Content-Range``; of several ranges only the first counts. By default an invalid or
  out-of-range one is ignored: 200 and the whole object. With ``x-oss-range-behavior: standard``
  an end past the object is cut to it (206) and a start past it is 416 ``InvalidRange``.

Faults (:meth:`OssSimulator.set_fault`): ``error_5xx`` (``status``), ``truncate`` (full
Content-Length, then the body stops at ``fraction`` of it or at byte ``at_byte`` of the object,
broken off as ``how`` says: ``close``, ``reset`` or ``stall``; see ``local.simulators.base``),
``slow`` (``seconds`` before the reply, ``chunk_delay_s`` between chunks), ``expire_link`` (the
request finds its link expired; ``ranged=True``: only a request with a ``Range`` header, i.e. a
transfer's resume); each takes ``key_suffix`` to hit one object.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from local.simulators.aliyun.signature import iso_utc
from local.simulators.base import LoopbackHttpSimulator, SimRequestHandler

__all__ = ["OssLogEntry", "OssObject", "OssSimulator", "content_type_for"]

_CHUNK = 64 * 1024
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)(?:,.*)?")
_CONTENT_TYPES = {
    ".wav": "audio/x-wav",
    ".mp3": "audio/mpeg",
    ".mkv": "video/x-matroska",
}


def content_type_for(key: str) -> str:
    """The Content-Type OSS would infer from the key's extension."""
    for suffix, ctype in _CONTENT_TYPES.items():
        if key.lower().endswith(suffix):
            return ctype
    return "application/octet-stream"


def _oss_request_id() -> str:
    return secrets.token_hex(12).upper()


@dataclass(frozen=True)
class OssObject:
    """A stored object.  It answers ``NoSuchKey`` until the simulated time ``available_at``."""

    bucket: str
    key: str
    size: int
    sha256: str
    md5_hex: str
    content_type: str
    uploaded_at: float
    available_at: float

    @property
    def etag(self) -> str:
        """OSS's ETag for a simple upload: the quoted upper-case md5."""
        return f'"{self.md5_hex.upper()}"'


@dataclass(frozen=True)
class OssLogEntry:
    """One request to the file server (the query, and so the signature, is never kept)."""

    method: str
    bucket: str
    key: str
    status: int
    code: str
    signed: bool


class OssSimulator(LoopbackHttpSimulator[OssLogEntry]):
    """A loopback file server speaking OSS's signed-URL GET."""

    FAULT_KINDS: ClassVar[tuple[str, ...]] = ("error_5xx", "truncate", "slow", "expire_link")
    FAULT_PARAMS: ClassVar[Mapping[str, frozenset[str]]] = {
        "error_5xx": frozenset({"status", "key_suffix"}),
        "truncate": frozenset({"fraction", "at_byte", "how", "key_suffix"}),
        "slow": frozenset({"seconds", "chunk_delay_s", "key_suffix"}),
        "expire_link": frozenset({"ranged", "key_suffix"}),
    }
    THREAD_NAME: ClassVar[str] = "oss-sim"
    SERVER_HEADER: ClassVar[str] = "AliyunOSS"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        access_key_id: str = "LTAI5tSimOssUrlSigner0000",
        access_key_secret: str | None = None,
        region: str = "cn-shanghai",
    ) -> None:
        """``clock`` is shared with the owning RPC simulator so one ``advance_time`` expires both."""
        super().__init__(host=host, port=port, clock=clock)
        self.access_key_id = access_key_id
        self._secret = access_key_secret or secrets.token_urlsafe(24)
        self.region = region
        self._objects: dict[tuple[str, str], tuple[OssObject, bytes]] = {}

    # ------------------------------------------------------------------ objects and URLs

    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        available_at: float | None = None,
    ) -> OssObject:
        """Store ``data``; it is served from ``available_at`` (default: now) on."""
        if not bucket or "/" in bucket or not key or key.startswith("/"):
            raise ValueError("bucket must be a plain name and key a relative path")
        now = self.now()
        obj = OssObject(
            bucket=bucket,
            key=key,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            md5_hex=hashlib.md5(data).hexdigest(),  # noqa: S324 - OSS's ETag is an md5
            content_type=content_type or content_type_for(key),
            uploaded_at=now,
            available_at=now if available_at is None else available_at,
        )
        with self._lock:
            self._objects[(bucket, key)] = (obj, data)
        return obj

    def get_object(self, bucket: str, key: str) -> bytes:
        """The exact bytes of a stored object (KeyError if unknown)."""
        with self._lock:
            return self._objects[(bucket, key)][1]

    def head_object(self, bucket: str, key: str) -> OssObject:
        """Metadata of a stored object (KeyError if unknown)."""
        with self._lock:
            return self._objects[(bucket, key)][0]

    def delete_object(self, bucket: str, key: str) -> None:
        """Remove an object: its URLs then answer ``NoSuchKey``."""
        with self._lock:
            self._objects.pop((bucket, key), None)

    def signature(self, method: str, bucket: str, key: str, expires: int, oss_headers: str = "") -> str:
        """OSS V1 query-string signature of ``method /bucket/key`` valid until ``expires``, with
        the canonical ``x-oss-*`` header lines (none for a plain link)."""
        to_sign = _string_to_sign(method, bucket, key, expires, oss_headers)
        digest = hmac.new(self._secret.encode(), to_sign.encode("utf-8"), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()

    def sign_url(self, bucket: str, key: str, expires: int) -> str:
        """A GET URL for ``bucket/key`` that works until epoch second ``expires``."""
        # '/' left raw in the signature, as in the vendor's own sample URLs ("...lg4/WmEA%3D").
        sig = quote(self.signature("GET", bucket, key, expires), safe="/")
        query = f"Expires={expires}&OSSAccessKeyId={self.access_key_id}&Signature={sig}"
        return f"{self.base_url}/{bucket}/{quote(key)}?{query}"

    def presign(self, bucket: str, key: str, ttl_s: float) -> str:
        """A GET URL valid for ``ttl_s`` simulated seconds from now."""
        return self.sign_url(bucket, key, int(self.now() + ttl_s))

    # ------------------------------------------------------------------ faults

    def _check_fault_params(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        params = super()._check_fault_params(kind, params)
        if kind == "slow":
            params["chunk_delay_s"] = float(params.get("chunk_delay_s", 0.0))
        return params

    def _object_fault(self, kind: str, key: str, *, ranged: bool = False) -> dict[str, Any] | None:
        """Take an armed ``kind`` meant for every object or for keys ending in its ``key_suffix``
        (an ``expire_link`` with ``ranged`` only for a request with a Range header)."""
        return self._take_fault(
            kind,
            lambda p: key.endswith(str(p.get("key_suffix") or "")) and (ranged or not p.get("ranged")),
        )

    # ------------------------------------------------------------------ HTTP

    def _handle(self, h: SimRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        signed = bool(query.get("Signature"))
        head = method == "HEAD"

        def error(status: int, code: str, message: str, **extra: str) -> None:
            self._count(f"error:{code}")
            rid = _oss_request_id()
            fields = {
                "Code": code,
                "Message": message,
                "RequestId": rid,
                "HostId": f"{bucket or 'oss'}.oss-{self.region}.aliyuncs.com",
                **extra,
            }
            body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n' + "".join(
                f"  <{k}>{escape(v)}</{k}>\n" for k, v in fields.items()
            )
            headers = [("x-oss-request-id", rid), ("x-oss-ec", code)]
            if status >= 500:
                headers.append(("Connection", "close"))
                h.close_connection = True
            h.send_bytes(status, (body + "</Error>\n").encode(), "application/xml", headers, head=head)
            self._log_request(OssLogEntry(method, bucket, key, status, code, signed))

        if method not in ("GET", "HEAD"):
            h.read_body()
            error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
            return
        if not bucket or not key:
            error(403, "AccessDenied", "You have no right to access this object because of bucket acl.")
            return
        expires_text, key_id, sig = query.get("Expires"), query.get("OSSAccessKeyId"), query.get("Signature")
        if not (expires_text and key_id and sig):
            error(403, "AccessDenied", "You have no right to access this object because of bucket acl.")
            return
        try:
            expires = int(expires_text)
        except ValueError:
            error(403, "AccessDenied", "Invalid Expires.")
            return
        now = self.now()
        if now > expires or (
            method == "GET" and self._object_fault("expire_link", key, ranged="Range" in h.headers) is not None
        ):
            self._count("expired")
            error(
                403,
                "AccessDenied",
                "Request has expired.",
                Expires=iso_utc(expires, millis=True),
                ServerTime=iso_utc(now, millis=True),
            )
            return
        if key_id != self.access_key_id:
            error(
                403,
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
                OSSAccessKeyId=key_id,
            )
            return
        oss_headers = _canonical_oss_headers(h.headers.items())
        expected = self.signature(method, bucket, key, expires, oss_headers)
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            self._count("bad_signature")
            error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
                StringToSign=_string_to_sign(method, bucket, key, expires, oss_headers),
                OSSAccessKeyId=key_id,
                SignatureProvided=sig,
            )
            return
        with self._lock:
            stored = self._objects.get((bucket, key))
        if stored is None or now < stored[0].available_at:
            error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
            return
        obj, data = stored
        slow = self._object_fault("slow", key)
        if slow is not None and slow["seconds"] > 0:
            time.sleep(slow["seconds"])
        fault = self._object_fault("error_5xx", key)
        if fault is not None:
            status = int(fault["status"])
            code = "InternalError" if status == 500 else "ServiceUnavailable"
            error(status, code, "Please try again." if status != 500 else "We encountered an internal error.")
            return
        status = self._send_object(h, obj, data, head=head, chunk_delay=slow["chunk_delay_s"] if slow else 0.0)
        self._log_request(OssLogEntry(method, bucket, key, status, "OK", signed))

    def _send_object(self, h: SimRequestHandler, obj: OssObject, data: bytes, *, head: bool, chunk_delay: float) -> int:
        """Stream ``data`` (or the requested range); returns the HTTP status sent."""
        standard = (h.headers.get("x-oss-range-behavior") or "").strip().lower() == "standard"
        span = _requested_range(h.headers.get("Range") or "", len(data), standard=standard)
        if span is None:
            self._count("error:InvalidRange")
            body = _error_xml("InvalidRange", "The requested range cannot be satisfied", obj.bucket, self.region)
            extra = [("Content-Range", f"bytes */{len(data)}"), ("x-oss-request-id", _oss_request_id())]
            h.send_bytes(416, body, "application/xml", extra, head=head)
            self._log_request(OssLogEntry(h.command, obj.bucket, obj.key, 416, "InvalidRange", True))
            return 416
        start, end, status = span
        trunc = None if head else self._object_fault("truncate", obj.key)
        headers: list[tuple[str, str]] = [
            ("ETag", obj.etag),
            ("Content-MD5", base64.b64encode(bytes.fromhex(obj.md5_hex)).decode()),
            ("Last-Modified", email.utils.formatdate(obj.uploaded_at, usegmt=True)),
            ("Accept-Ranges", "bytes"),
            ("x-oss-request-id", _oss_request_id()),
            ("x-oss-object-type", "Normal"),
        ]
        if status == 206:
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{len(data)}"))
        if trunc is not None:
            headers.append(("Connection", "close"))
        h.send_response(status)
        h.send_header("Content-Type", obj.content_type)
        h.send_header("Content-Length", str(end - start))
        for name, value in headers:
            h.send_header(name, value)
        h.end_headers()
        if head:
            self._count("heads_ok")
            return status
        limit = end if trunc is None else self._truncation_limit(trunc, start, end)
        view = memoryview(data)
        sent = 0
        for offset in range(start, limit, _CHUNK):
            chunk = view[offset : min(offset + _CHUNK, limit)]
            h.wfile.write(chunk)
            sent += len(chunk)
            if chunk_delay:
                h.wfile.flush()
                time.sleep(chunk_delay)
        h.wfile.flush()
        self._count("bytes_sent", sent)
        if trunc is not None:
            self._count("downloads_truncated")
            self._break_body(h, trunc)
            return status
        self._count("downloads_ok" if status == 200 else "downloads_partial")
        return status


def _requested_range(header: str, size: int, *, standard: bool) -> tuple[int, int, int] | None:
    """(start, end exclusive, status) OSS serves for a ``Range`` header; None for a 416.

    Only the first of several ranges counts. Default: anything invalid or outside ``0..size-1``
    is ignored (200, the whole object). ``standard``: an end past the object is cut to it, and a
    start past it (or any range of an empty object) is unsatisfiable.
    """
    whole = (0, size, 200)
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None or not (match.group(1) or match.group(2)):
        return whole
    first, last = match.group(1), match.group(2)
    if first:
        lo, hi = int(first), int(last) if last else max(int(first), size - 1)
        if lo > hi:
            return whole  # malformed: ignored in both modes
    else:  # "bytes=-n": the last n bytes
        n = int(last)
        if n == 0:
            return None if standard else whole
        lo, hi = size - n, size - 1
        if lo < 0:
            return (0, size, 206) if standard and size else whole
    if lo >= size:
        return None if standard else whole
    if hi >= size:
        if not standard:
            return whole
        hi = size - 1
    return (lo, hi + 1, 206)


def _canonical_oss_headers(headers: Iterable[tuple[str, str]]) -> str:
    """The ``x-oss-*`` request headers as V1 signing lists them: ``name:value`` lines, sorted."""
    found = sorted(
        (name.strip().lower(), value.strip()) for name, value in headers if name.lower().startswith("x-oss-")
    )
    return "".join(f"{name}:{value}\n" for name, value in found)


def _string_to_sign(method: str, bucket: str, key: str, expires: int, oss_headers: str) -> str:
    return f"{method}\n\n\n{expires}\n{oss_headers}/{bucket}/{key}"


def _error_xml(code: str, message: str, bucket: str, region: str, **extra: str) -> bytes:
    fields = {
        "Code": code,
        "Message": message,
        "RequestId": _oss_request_id(),
        "HostId": f"{bucket or 'oss'}.oss-{region}.aliyuncs.com",
        **extra,
    }
    body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n' + "".join(
        f"  <{k}>{escape(v)}</{k}>\n" for k, v in fields.items()
    )
    return (body + "</Error>\n").encode()
