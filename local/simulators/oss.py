"""OSS-style file server for the download URLs the Alibaba simulators hand out.

Objects are served at path-style signed URLs (real OSS uses ``bucket.oss-region.aliyuncs.com``
hosts; on loopback the bucket goes into the path)::

    http://127.0.0.1:P/{bucket}/{key}?Expires=<epoch>&OSSAccessKeyId=<id>&Signature=<base64, url-encoded>

The signature is OSS's V1 query-string signature, ``base64(HMAC-SHA1(secret,
"GET\\n\\n\\n{Expires}\\n/{bucket}/{key}"))``, so a GET-signed URL does not work for HEAD
(the verb is signed), as on OSS.  Replies follow OSS:

* expired (checked first) -> 403 ``AccessDenied`` "Request has expired." with ``Expires`` and
  ``ServerTime``; unknown ``OSSAccessKeyId`` -> 403 ``InvalidAccessKeyId``; bad signature ->
  403 ``SignatureDoesNotMatch`` (with OSS's ``StringToSign`` element); no signature at all ->
  403 ``AccessDenied`` (private bucket); unknown key, or an object not yet "written"
  (``available_at`` in the future) -> 404 ``NoSuchKey``.  Error bodies are XML.
* success: 200 (206 for a satisfiable ``Range: bytes=``), ``Content-Length``,
  ``Content-Type``, ``ETag`` (quoted upper-case md5), ``Content-MD5``, ``Last-Modified``,
  ``x-oss-request-id``, streamed in 64 KiB chunks.

Faults (:meth:`OssSimulator.set_fault`): ``error_5xx`` (``status``), ``truncate``
(``fraction``: full Content-Length, connection closed early), ``slow`` (``seconds`` before
the reply, ``chunk_delay_s`` between chunks); each takes ``key_suffix`` to hit one object.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from local.simulators.aliyun.signature import iso_utc
from local.simulators.base import LoopbackHttpSimulator, SimRequestHandler

__all__ = ["OssLogEntry", "OssObject", "OssSimulator", "content_type_for"]

_CHUNK = 64 * 1024
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
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

    FAULT_KINDS: ClassVar[tuple[str, ...]] = ("error_5xx", "truncate", "slow")
    FAULT_PARAMS: ClassVar[Mapping[str, frozenset[str]]] = {
        "error_5xx": frozenset({"status", "key_suffix"}),
        "truncate": frozenset({"fraction", "key_suffix"}),
        "slow": frozenset({"seconds", "chunk_delay_s", "key_suffix"}),
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

    def signature(self, method: str, bucket: str, key: str, expires: int) -> str:
        """OSS V1 query-string signature of ``method /bucket/key`` valid until ``expires``."""
        to_sign = f"{method}\n\n\n{expires}\n/{bucket}/{key}"
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

    def _object_fault(self, kind: str, key: str) -> dict[str, Any] | None:
        """Take an armed ``kind`` meant for every object or for keys ending in its ``key_suffix``."""
        return self._take_fault(kind, lambda p: key.endswith(str(p.get("key_suffix") or "")))

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
        if now > expires:
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
        expected = self.signature(method, bucket, key, expires)
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            self._count("bad_signature")
            error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
                StringToSign=f"{method}\n\n\n{expires}\n/{bucket}/{key}",
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
        start, end, status = 0, len(data), 200
        m = _RANGE_RE.fullmatch((h.headers.get("Range") or "").strip())
        if m and (m.group(1) or m.group(2)) and data:
            first, last = m.group(1), m.group(2)
            if first:
                lo, hi = int(first), (int(last) + 1 if last else len(data))
            else:  # "bytes=-N": the last N bytes
                lo, hi = max(0, len(data) - int(last)), len(data)
            # OSS's default behaviour: an unsatisfiable or malformed range returns the whole object.
            if lo < len(data) and lo < hi:
                start, end, status = lo, min(hi, len(data)), 206
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
        limit = end if trunc is None else start + int((end - start) * trunc["fraction"])
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
            # Content-Length promised more: closing now is what makes the client see a short read.
            h.close_connection = True
            self._count("downloads_truncated")
            return status
        self._count("downloads_ok" if status == 200 else "downloads_partial")
        return status
