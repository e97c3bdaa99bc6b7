"""The one S3 writer: a download streamed into S3, uploads overlapping the download, verified by
S3 itself, resumed in the same attempt when the download breaks. Nothing touches /tmp.

Entry point: ``store_download(s3, bucket=, key=, open_at=, content_type=, metadata=, settings=,
time_left=)``; ``open_at(offset)`` opens the file from byte ``offset`` (``PendingDownload.open``).
``upload_stream`` feeds the same engine from an iterable of chunks that cannot be reopened.

- **Overlap.** The calling thread reads the download, hashes it and collects a part's chunks; a
  full part is joined into one ``bytes`` (the one copy; botocore sends bytes as they are, with
  or without awscrt) and handed to a small pool of uploader threads while the reader goes on
  with the next part. Permits for ``uploaders + queued_parts`` parts in flight hold the reader back when S3 is
  slower than the provider. Memory is therefore at most ``TransferSettings.memory_bound`` = part
  size × (uploaders + queued parts + the part being filled + its joined copy) + one read chunk,
  whatever the file size: 8 MiB × 6 + 1 MiB = 49 MiB.
- **Small files.** A file that ends before its first part fills goes up in one PutObject, after
  its size was checked against the declared one, with its SHA-256 for S3 to verify (so the
  object's S3 checksum is the ledger's sha256).
- **Integrity.** The multipart upload is created with ChecksumAlgorithm CRC32 and every part
  carries the CRC32 of the bytes *as they came from the provider* (computed by the reader, not
  from the buffer at upload time), so S3 rejects a part that differs from what was downloaded,
  and checks at completion that the listed parts are the ones it verified (a COMPOSITE checksum).
  Why not SHA-256 parts: a second SHA-256 pass costs 0.55 CPU s per GiB where CRC32 costs 0.20
  (measured: docs/operations.md), for no gain against transport errors. Why not a FULL_OBJECT
  CRC: it needs the ``ChecksumType`` parameter (botocore 1.36+), and the functions use the
  runtime's botocore, whose version AWS does not promise; an unknown parameter would fail every
  upload. The whole-file SHA-256 goes to the ledger and the caller's metadata as before.
- **Resume.** A body that breaks (reset, truncated, a read that stalls past the read timeout)
  keeps the parts uploaded, the part being filled and the running hashes, and asks ``open_at``
  for the rest (``Range: bytes=N-``, N = the bytes already read; the HTTP client drops a read
  that a break cut short, so at most one read chunk comes twice). A reply that starts at N and
  names the same total goes on; a whole file (the provider ignored ``Range``) restarts cleanly:
  hashes from zero, parts from number 1 again (S3 overwrites a part number; the uploads in flight
  are waited for first). At most ``max_resumes`` per attempt, and none with less than
  ``resume_needs_seconds`` left: then the attempt ends as a retry.
- **Failure.** Any failure, read or upload, stops the parts not yet sent, waits for those being
  sent, and aborts the multipart upload: no part is left behind and no half object is visible.
  A download that cannot be finished is a ``TransferBroken``, S3 refusing a call (after the
  SDK's own retries) a ``StorageFailed``: both retryable, so the retry workflow waits and tries
  again, and ends the job FAILED with the reason if it never works. A bug raises as itself.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import math
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import urlencode

import requests
import urllib3
from botocore.exceptions import BotoCoreError, ClientError

from callvault.config import TransferSettings
from callvault.errors import RetryKind, RetryLater
from callvault.models import StoredObject
from callvault.observability import logger
from callvault.providers.interface import DownloadStream

PART_SIZE = TransferSettings.part_size
Opener = Callable[[int], AbstractContextManager[DownloadStream]]
# How a download body breaks mid-way (in the reader thread; S3 calls never raise these here).
BODY_BROKE = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)


class TransferBroken(RetryLater):
    """The download could not be completed in this attempt; the retry workflow takes the job."""

    def __init__(self, reason: str) -> None:
        super().__init__(RetryKind.TRANSFER_FAILED, reason)


class StorageFailed(RetryLater):
    """S3 refused a call or could not be reached (after the SDK's retries); the upload was aborted."""

    def __init__(self, reason: str) -> None:
        super().__init__(RetryKind.STORAGE_UNAVAILABLE, reason)


def store_download(
    s3: Any,
    *,
    bucket: str,
    key: str,
    open_at: Opener,
    content_type: Callable[[str | None], str],
    metadata: Mapping[str, str],
    settings: TransferSettings | None = None,
    time_left: Callable[[], float] | None = None,
    tags: Mapping[str, str] | None = None,
) -> StoredObject:
    """Stream the file ``open_at`` opens into ``s3://bucket/key``; returns its size and sha256.

    ``content_type`` maps the type the provider declared to the one stored; ``time_left`` is the
    seconds the invocation has left (it decides whether a resume is still worth starting).
    ``tags`` go on the object. The object carries its sha256 as metadata (``x-amz-meta-sha256``)
    when it goes up in one request; a multipart upload's metadata is fixed when it starts, before
    any byte is read, so there it becomes the ``sha256`` tag once the upload is complete.
    """
    settings = settings or TransferSettings()
    tags = dict(tags or {})
    upload = _MultipartUpload(s3, bucket, key, metadata, settings, tags)
    try:
        body = _Download(open_at, upload, settings, time_left or _unlimited, key).read(content_type)
        if body.size == 0:
            raise TransferBroken("provider sent an empty file")
        if upload.started:
            reply = upload.complete(body.take_last_part())
            _tag_with_digest(s3, bucket, key, reply.get("VersionId"), {**tags, "sha256": body.sha256.hexdigest()})
        else:
            reply = _put_whole_file(s3, bucket, key, body, upload.content_type, metadata, tags)
    except BaseException:
        upload.abort()
        raise
    finally:
        upload.close()
    return StoredObject(
        bucket=bucket,
        key=key,
        size=body.size,
        sha256=body.sha256.hexdigest(),
        version_id=reply.get("VersionId"),
        content_type=upload.content_type,
    )


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
    """``store_download`` for bytes that come as an iterable and cannot be asked for again (a
    break ends the transfer): benchmarks, and callers with the bytes in hand."""

    @contextmanager
    def once(offset: int) -> Iterator[DownloadStream]:
        if offset:
            raise TransferBroken(f"the stream broke off at byte {offset} and cannot be reopened")
        yield _IterableStream(chunks, expected_size)

    settings = TransferSettings(part_size=part_size, read_size=min(TransferSettings.read_size, part_size))
    return store_download(
        s3,
        bucket=bucket,
        key=key,
        open_at=once,
        content_type=lambda _: content_type,
        metadata=metadata,
        settings=settings,
    )


def _unlimited() -> float:
    return math.inf


class _IterableStream:
    def __init__(self, chunks: Iterable[bytes], expected_size: int | None) -> None:
        self._chunks = chunks
        self.start = 0
        self.total_size = self.content_length = expected_size
        self.content_type: str | None = None

    def chunks(self, size: int) -> Iterator[bytes]:
        return iter(self._chunks)


class _Body:
    """What has been read of the file: its running SHA-256 and size, and the part being filled
    (the chunks as they came) with the CRC32 of its bytes as they arrived."""

    def __init__(self, part_size: int) -> None:
        self._part_size = part_size
        self.restart()

    def restart(self) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.total: int | None = None
        self._handed_over = 0  # bytes in the full parts handed over
        self._pieces: list[bytes] = []
        self._filled = 0
        self._crc = 0

    def take(self, chunk: bytes, hand_over: Callable[[bytes, int], None]) -> None:
        """Add ``chunk``; every part that fills up goes to ``hand_over(part, crc32)``."""
        view = memoryview(chunk)
        self.sha256.update(view)
        self.size += len(view)
        if self.total is not None and self.size > self.total:
            raise TransferBroken(f"provider sent more than the {self.total} bytes it declared")
        while view:
            piece = view[: self._part_size - self._filled]
            # A chunk is kept as it came; only one that straddles a part boundary is cut (copied).
            whole = len(piece) == len(chunk) and isinstance(chunk, bytes)
            self._pieces.append(chunk if whole else piece.tobytes())
            self._crc = zlib.crc32(piece, self._crc)
            self._filled += len(piece)
            view = view[len(piece) :]
            if self._filled == self._part_size:
                hand_over(self._joined(), self._crc)
                self._handed_over += self._filled
                self._filled, self._crc = 0, 0

    def _joined(self) -> bytes:
        # bytes, not a bytearray: with awscrt installed (boto3[crt], the dev venv), botocore's CRT
        # signer copies a bytearray body into a request of its own, 8 MiB more per part in
        # flight (measured); bytes it sends as they are. The Lambda runtime, without awscrt,
        # copies neither, so bytes keep the bound wherever the engine runs.
        pieces, self._pieces = self._pieces, []
        return b"".join(pieces)

    def take_last_part(self) -> tuple[bytes, int] | None:
        """The part being filled, as the last one (None when the file ended on a part boundary)."""
        if self._filled == 0:
            return None
        return self._joined(), self._crc


class _Download:
    """The reading side: opens, reads, resumes or restarts, and hands full parts over."""

    def __init__(
        self,
        open_at: Opener,
        upload: _MultipartUpload,
        settings: TransferSettings,
        time_left: Callable[[], float],
        key: str,
    ) -> None:
        self._open_at = open_at
        self._upload = upload
        self._settings = settings
        self._time_left = time_left
        self._key = key
        self._body = _Body(settings.part_size)

    def read(self, content_type: Callable[[str | None], str]) -> _Body:
        body = self._body
        resumes = 0
        while True:
            offset = body.size
            try:
                with self._open_at(offset) as stream:
                    self._begin(stream, offset, content_type)
                    for chunk in stream.chunks(self._settings.read_size):
                        if chunk:
                            body.take(chunk, self._upload.send)
                if body.total is None or body.size == body.total:
                    return body
                broke = f"the body ended at byte {body.size} of {body.total}"
            except BODY_BROKE as exc:
                if body.total is not None and body.size == body.total:
                    return body  # every byte came before the connection went
                broke = f"{type(exc).__name__} at byte {body.size}"
            resumes += 1
            if resumes > self._settings.max_resumes:
                raise TransferBroken(f"download broke off {resumes} times in this attempt (last: {broke})")
            if self._time_left() < self._settings.resume_needs_seconds:
                raise TransferBroken(f"download broke off ({broke}) with too little time left to resume")
            logger.info("download broke off; resuming", extra={"key": self._key, "why": broke, "resume": resumes})

    def _begin(self, stream: DownloadStream, offset: int, content_type: Callable[[str | None], str]) -> None:
        """Check where the reply starts; a whole file after a break means starting over."""
        body = self._body
        if offset and stream.start == 0:
            logger.info(
                "provider sent the whole file instead of the rest; starting over",
                extra={"key": self._key, "had_bytes": offset},
            )
            self._upload.restart()
            body.restart()
        elif stream.start != offset:
            raise TransferBroken(f"provider answered from byte {stream.start} when asked from byte {offset}")
        elif offset and stream.total_size is not None and body.total is not None and stream.total_size != body.total:
            raise TransferBroken(f"the file is {stream.total_size} bytes now, {body.total} when the transfer began")
        if body.total is None:
            body.total = stream.total_size
        if self._upload.content_type == "":
            self._upload.content_type = content_type(stream.content_type)


class _MultipartUpload:
    """The parts of one multipart upload, created with the first full part and sent by a small
    pool of threads (boto3 clients are thread-safe) while the reader goes on."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        metadata: Mapping[str, str],
        settings: TransferSettings,
        tags: Mapping[str, str],
    ) -> None:
        self._s3 = s3
        self._tagging = {"Tagging": urlencode(tags)} if tags else {}
        self._bucket = bucket
        self._key = key
        self._metadata = dict(metadata)
        self._settings = settings
        self.content_type = ""
        self.upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.Semaphore(settings.uploaders + settings.queued_parts)
        self._sending: list[Future[None]] = []
        self._parts: dict[int, dict[str, Any]] = {}
        self._next_number = 1
        self._lock = threading.Lock()
        self._failure: Exception | None = None  # the first part that failed, and why
        self._stopped = False

    @property
    def started(self) -> bool:
        return self.upload_id is not None

    def send(self, part: bytes, crc: int) -> None:
        """Queue ``part`` as the next part; waits while every permit is taken."""
        if self.upload_id is None:
            self.upload_id = _s3_call(
                "start the multipart upload",
                self._s3.create_multipart_upload,
                Bucket=self._bucket,
                Key=self._key,
                ContentType=self.content_type,
                Metadata=self._metadata,
                ChecksumAlgorithm="CRC32",
                **self._tagging,
            )["UploadId"]
            self._pool = ThreadPoolExecutor(max_workers=self._settings.uploaders, thread_name_prefix="s3-part")
        self._raise_failure()
        self._slots.acquire()
        self._raise_failure(release=True)
        number, self._next_number = self._next_number, self._next_number + 1
        assert self._pool is not None
        self._sending = [future for future in self._sending if not future.done()]
        self._sending.append(self._pool.submit(self._upload_part, number, part, crc))

    def _upload_part(self, number: int, part: bytes, crc: int) -> None:
        try:
            if self._stopped:
                return
            checksum = base64.b64encode(crc.to_bytes(4, "big")).decode()
            reply = self._s3.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=part,
                ChecksumCRC32=checksum,
            )
            with self._lock:
                self._parts[number] = {"PartNumber": number, "ETag": reply["ETag"], "ChecksumCRC32": checksum}
        except Exception as exc:
            with self._lock:
                if self._failure is None:
                    # S3's refusal or absence is S3 trouble; anything else is a bug, raised as itself.
                    s3_trouble = isinstance(exc, ClientError | BotoCoreError)
                    self._failure = _storage_failure(f"upload part {number}", exc) if s3_trouble else exc
                self._stopped = True
        finally:
            self._slots.release()

    def _raise_failure(self, *, release: bool = False) -> None:
        with self._lock:
            failure = self._failure
        if failure is not None:
            if release:
                self._slots.release()
            raise failure

    def _drain(self) -> None:
        """Wait until no part is being sent."""
        wait(self._sending)
        self._sending = []

    def restart(self) -> None:
        """Forget the parts sent: the file is sent again from part 1 (same upload, overwritten)."""
        self._drain()
        self._raise_failure()
        with self._lock:
            self._parts.clear()
        self._next_number = 1

    def complete(self, last: tuple[bytes, int] | None) -> dict[str, Any]:
        if last is not None:
            self.send(*last)
        self._drain()
        self._raise_failure()
        with self._lock:
            parts = [self._parts[number] for number in sorted(self._parts)]
        if [part["PartNumber"] for part in parts] != list(range(1, self._next_number)):
            raise StorageFailed(f"parts missing before completion: have {len(parts)} of {self._next_number - 1}")
        reply: dict[str, Any] = _s3_call(
            "complete the multipart upload",
            self._s3.complete_multipart_upload,
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )
        self.upload_id = None  # completed: nothing to abort any more
        return reply

    def abort(self) -> None:
        """Stop sending, wait for the parts in flight, and abort: no part stays behind."""
        self._stopped = True
        self._drain()
        if self.upload_id is None:
            return
        try:
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self.upload_id)
        except Exception:
            # The original error decides what happens to the job; the bucket's lifecycle rule
            # removes an upload left open after a day.
            logger.exception("could not abort multipart upload", extra={"key": self._key})

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _put_whole_file(
    s3: Any,
    bucket: str,
    key: str,
    body: _Body,
    content_type: str,
    metadata: Mapping[str, str],
    tags: Mapping[str, str],
) -> dict[str, Any]:
    """A file smaller than one part: one request, with the SHA-256 S3 verifies and keeps."""
    last = body.take_last_part()
    data = last[0] if last else b""
    checksum = base64.b64encode(body.sha256.digest()).decode()
    extra = {"Tagging": urlencode(tags)} if tags else {}
    reply: dict[str, Any] = _s3_call(
        "store the file",
        s3.put_object,
        Bucket=bucket,
        Key=key,
        Body=data,
        ContentType=content_type,
        Metadata={**metadata, "sha256": body.sha256.hexdigest()},
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=checksum,
        **extra,
    )
    return reply


def _tag_with_digest(s3: Any, bucket: str, key: str, version_id: str | None, tags: Mapping[str, str]) -> None:
    """The finished multipart object's tags, with its sha256. The object is stored and verified
    part by part already: a tag S3 does not take is logged, not worth storing the file again
    (the ledger, the sidecar and the event carry the sha256 all the same)."""
    version = {"VersionId": version_id} if version_id else {}
    try:
        s3.put_object_tagging(
            Bucket=bucket,
            Key=key,
            Tagging={"TagSet": [{"Key": name, "Value": value} for name, value in tags.items()]},
            **version,
        )
    except (ClientError, BotoCoreError) as exc:
        logger.warning("sha256 tag not set on the stored object", extra={"key": key, "error": str(exc)})


def _s3_call(what: str, call: Callable[..., Any], **params: Any) -> Any:
    try:
        return call(**params)
    except (ClientError, BotoCoreError) as exc:
        raise _storage_failure(what, exc) from exc


def _storage_failure(what: str, exc: Exception) -> StorageFailed:
    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
    failure = StorageFailed(f"S3 could not {what} ({code or type(exc).__name__}); the upload was aborted")
    failure.__cause__ = exc
    return failure
