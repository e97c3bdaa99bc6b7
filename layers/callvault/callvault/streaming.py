"""The one S3 writer: stream a download into a multipart upload in constant memory.

The SHA-256 and the byte count are computed on the fly; nothing touches /tmp. If the
stream breaks or its length differs from what the provider declared, the multipart upload
is aborted, so no half object ever becomes visible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from callvault.errors import RetryKind, RetryLater
from callvault.models import StoredObject
from callvault.observability import logger

PART_SIZE = 8 * 1024 * 1024  # S3 minimum is 5 MiB (except the last part)
READ_SIZE = 1024 * 1024


class TransferBroken(RetryLater):
    def __init__(self, reason: str) -> None:
        super().__init__(RetryKind.TRANSFER_FAILED, reason)


def upload_stream(
    s3: Any,
    *,
    bucket: str,
    key: str,
    chunks: Iterable[bytes],
    expected_size: int | None,
    content_type: str,
    metadata: Mapping[str, str],
    part_size: int = PART_SIZE,
) -> StoredObject:
    """Copy ``chunks`` into ``s3://bucket/key``; returns size and sha256 of what was stored."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type, Metadata=dict(metadata))[
        "UploadId"
    ]
    try:
        digest, size, parts = _upload_parts(s3, bucket, key, upload_id, chunks, part_size)
        if expected_size is not None and size != expected_size:
            raise TransferBroken(f"received {size} of {expected_size} bytes")
        if size == 0:
            raise TransferBroken("provider sent an empty file")
        reply = s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException as exc:
        try:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:
            # The original error decides what happens to the job; the bucket's lifecycle rule
            # removes an upload left open after a day.
            logger.exception("could not abort multipart upload", extra={"key": key})
        if isinstance(exc, RetryLater) or not isinstance(exc, Exception):
            raise
        if _is_stream_error(exc):
            raise TransferBroken(f"download broke off ({type(exc).__name__})") from exc
        raise
    return StoredObject(
        bucket=bucket,
        key=key,
        size=size,
        sha256=digest,
        version_id=reply.get("VersionId"),
        content_type=content_type,
    )


def _upload_parts(
    s3: Any, bucket: str, key: str, upload_id: str, chunks: Iterable[bytes], part_size: int
) -> tuple[str, int, list[dict[str, Any]]]:
    sha = hashlib.sha256()
    size = 0
    parts: list[dict[str, Any]] = []
    buffer = bytearray()

    def flush() -> None:
        number = len(parts) + 1
        # The bytearray itself, not a bytes copy: one part buffer less in memory. It is
        # cleared only after upload_part returned (botocore is done with it then).
        reply = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=buffer)
        parts.append({"PartNumber": number, "ETag": reply["ETag"]})
        buffer.clear()

    for chunk in chunks:
        if not chunk:
            continue
        sha.update(chunk)
        size += len(chunk)
        buffer += chunk
        if len(buffer) >= part_size:
            flush()
    if buffer or not parts:
        flush()
    return sha.hexdigest(), size, parts


def _is_stream_error(exc: Exception) -> bool:
    import requests
    import urllib3

    return isinstance(exc, (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))
