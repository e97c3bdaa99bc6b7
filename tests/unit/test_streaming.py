"""The transfer engine (callvault.streaming) against an in-memory S3 that checks checksums like
S3 does (tests/fakes.py) and downloads that break where a test says: in memory, and over real
HTTP from the OSS simulator. Parts are tiny so that a file of a few dozen KiB is many parts.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests
import urllib3

from callvault.config import Settings, TransferSettings
from callvault.download_hosts import DownloadHosts
from callvault.errors import ConfigError, RetryKind, RetryLater
from callvault.models import StoredObject
from callvault.signed_download import open_signed_url
from callvault.streaming import Opener, StorageFailed, TransferBroken, store_download, upload_stream
from local.simulators.oss import OssSimulator
from tests.fakes import FakeS3, chunks, crc32_b64

PART = 4096
SETTINGS = TransferSettings(part_size=PART, read_size=1000, uploaders=2, queued_parts=1)
DATA = bytes(range(256)) * 70 + b"tail"  # 17,924 bytes: four full parts and a short fifth
KEY = "recordings/src/2026/12/01/c1/a.wav"


class ProviderFile:
    """A provider's copy of a file. Each request may break off at the next byte of ``breaks``
    (``how``: an exception, or a body that just ends short); ``honours_range`` decides whether
    ``open(offset)`` gets the rest or the whole file again."""

    def __init__(self, data: bytes = DATA, *, breaks: tuple[int, ...] = (), honours_range: bool = True) -> None:
        self.data = data
        self.breaks = list(breaks)
        self.honours_range = honours_range
        self.asked: list[int] = []
        self.served = 0
        self.how: type[BaseException] | None = ConnectionResetError

    @contextmanager
    def open(self, offset: int) -> Iterator[MemoryStream]:
        self.asked.append(offset)
        start = offset if self.honours_range else 0
        yield MemoryStream(self, start, self.breaks.pop(0) if self.breaks else None)


class MemoryStream:
    def __init__(self, file: ProviderFile, start: int, break_at: int | None) -> None:
        self.file = file
        self.start = start
        self.total_size = len(file.data)
        self.content_length = len(file.data) - start
        self.content_type = "audio/x-wav"
        self.break_at = break_at

    def chunks(self, size: int) -> Iterator[bytes]:
        for chunk in chunks(self.file.data[self.start : self.break_at], size):
            self.file.served += len(chunk)
            yield chunk
        if self.break_at is not None and self.file.how is not None:
            raise self.file.how("connection reset by peer")


def store(s3: FakeS3, open_at: Opener, time_left: Callable[[], float] | None = None) -> StoredObject:
    return store_download(
        s3,
        bucket="archive",
        key=KEY,
        open_at=open_at,
        content_type=lambda declared: declared or "application/octet-stream",
        metadata={"call-id": "c1"},
        settings=SETTINGS,
        time_left=time_left,
    )


def composite_crc32(data: bytes, part: int = PART) -> str:
    """The checksum S3 keeps for a multipart object whose parts carried their CRC32."""
    crcs = b"".join(base64.b64decode(crc32_b64(data[i : i + part])) for i in range(0, len(data), part))
    return f"{crc32_b64(crcs)}-{-(-len(data) // part)}"


# --------------------------------------------------------------------------- the normal cases


def test_a_file_of_several_parts_is_stored_with_its_sha256_and_s3_checks_every_parts_crc32() -> None:
    s3 = FakeS3()

    stored = store(s3, ProviderFile().open)

    assert (stored.size, stored.sha256) == (len(DATA), hashlib.sha256(DATA).hexdigest())
    assert s3.objects[KEY] == [DATA]
    [created] = s3.created.values()
    assert (created["ChecksumAlgorithm"], created["ContentType"]) == ("CRC32", "audio/x-wav")
    assert s3.checksums[KEY] == {"ChecksumCRC32": composite_crc32(DATA)}
    assert s3.metadata[next(iter(s3.created))] == {"call-id": "c1"}


def test_a_file_smaller_than_a_part_is_one_put_object_carrying_its_sha256() -> None:
    s3, small = FakeS3(), DATA[:3000]

    stored = store(s3, ProviderFile(small).open)

    assert s3.requests == ["PutObject"]
    assert s3.objects[KEY] == [small] and stored.sha256 == hashlib.sha256(small).hexdigest()
    assert s3.checksums[KEY] == {"ChecksumSHA256": base64.b64encode(hashlib.sha256(small).digest()).decode()}


def test_an_empty_file_or_one_shorter_than_declared_is_never_stored() -> None:
    s3 = FakeS3()

    with pytest.raises(TransferBroken, match="empty file"):
        store(s3, ProviderFile(b"").open)
    short = ProviderFile(breaks=(5000,) * 4)
    short.how = None  # the body just ends early, without an error
    with pytest.raises(TransferBroken, match="the body ended at byte 5000 of 17924"):
        store(s3, short.open)

    assert s3.objects == {} and s3.list_multipart_uploads()["Uploads"] == []


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize(
    "break_at",
    [0, 1, PART // 2, PART, 2 * PART + 1, len(DATA) - 1],
    ids=["first byte", "second byte", "mid-part", "part boundary", "after a boundary", "last byte"],
)
def test_a_download_broken_anywhere_resumes_from_the_first_byte_it_lacks(break_at: int) -> None:
    s3, file = FakeS3(), ProviderFile(breaks=(break_at,))

    stored = store(s3, file.open)

    assert file.asked == [0, break_at]
    assert file.served == len(DATA)  # nothing was downloaded twice
    assert s3.objects[KEY] == [DATA] and stored.sha256 == hashlib.sha256(DATA).hexdigest()
    assert s3.checksums[KEY] == {"ChecksumCRC32": composite_crc32(DATA)}
    assert s3.aborted == []


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ConnectionError,  # what a read timeout of a stalled body becomes
        urllib3.exceptions.ProtocolError,
        TimeoutError,
    ],
)
def test_every_way_a_body_breaks_is_resumed(error: type[BaseException]) -> None:
    s3, file = FakeS3(), ProviderFile(breaks=(9000,))
    file.how = error

    store(s3, file.open)

    assert file.asked == [0, 9000] and s3.objects[KEY] == [DATA]


def test_a_provider_that_ignores_range_gets_a_clean_restart() -> None:
    s3, file = FakeS3(), ProviderFile(breaks=(2 * PART + 100,), honours_range=False)

    stored = store(s3, file.open)

    assert file.asked == [0, 2 * PART + 100]
    assert file.served == 2 * PART + 100 + len(DATA)  # the whole file again
    assert s3.objects[KEY] == [DATA] and stored.sha256 == hashlib.sha256(DATA).hexdigest()
    assert s3.requests.count("CreateMultipartUpload") == 1  # the same upload, its parts sent again
    assert s3.requests.count("UploadPart 1") == 2
    assert s3.checksums[KEY] == {"ChecksumCRC32": composite_crc32(DATA)}


def test_a_reply_that_starts_elsewhere_or_names_another_size_ends_the_attempt() -> None:
    class Shifted(ProviderFile):
        @contextmanager
        def open(self, offset: int) -> Iterator[MemoryStream]:
            with super().open(offset) as stream:
                if offset:
                    stream.start = offset - 10
                yield stream

    class Grown(ProviderFile):
        @contextmanager
        def open(self, offset: int) -> Iterator[MemoryStream]:
            with super().open(offset) as stream:
                if offset:
                    stream.total_size += 1
                yield stream

    s3 = FakeS3()
    with pytest.raises(TransferBroken, match="answered from byte 8990 when asked from byte 9000"):
        store(s3, Shifted(breaks=(9000,)).open)
    with pytest.raises(TransferBroken, match="the file is 17925 bytes now, 17924 when the transfer began"):
        store(s3, Grown(breaks=(9000,)).open)

    assert s3.objects == {} and s3.list_multipart_uploads()["Uploads"] == [] and len(s3.aborted) == 2


def test_a_provider_that_breaks_every_time_ends_as_a_retry_after_the_resumes_allowed() -> None:
    s3, file = FakeS3(), ProviderFile(breaks=(5000, 6000, 7000, 8000, 9000))

    with pytest.raises(TransferBroken, match=r"broke off 4 times in this attempt \(last: ConnectionResetError"):
        store(s3, file.open)

    assert file.asked == [0, 5000, 6000, 7000]  # max_resumes = 3
    assert s3.objects == {} and s3.list_multipart_uploads()["Uploads"] == [] and len(s3.aborted) == 1


def test_no_resume_is_started_without_the_time_to_finish_it() -> None:
    s3, file = FakeS3(), ProviderFile(breaks=(9000,))

    with pytest.raises(TransferBroken, match="too little time left to resume"):
        store(s3, file.open, time_left=lambda: 59.0)

    assert file.asked == [0] and s3.list_multipart_uploads()["Uploads"] == []


def test_a_failure_to_reopen_ends_the_attempt_with_the_providers_reason() -> None:
    s3, file = FakeS3(), ProviderFile(breaks=(9000,))

    @contextmanager
    def refusing_resumes(offset: int) -> Iterator[MemoryStream]:
        if offset:
            raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, "download failed: HTTP 503")
        with file.open(offset) as stream:
            yield stream

    with pytest.raises(RetryLater, match="HTTP 503"):
        store(s3, refusing_resumes)

    assert s3.list_multipart_uploads()["Uploads"] == [] and len(s3.aborted) == 1


# --------------------------------------------------------------------------- S3 failures and memory


def test_s3_refusing_one_part_mid_stream_aborts_the_upload_and_leaves_no_part() -> None:
    s3 = FakeS3(refuse_part=2)

    with pytest.raises(StorageFailed, match=r"S3 could not upload part 2 \(InternalError\); the upload was aborted"):
        store(s3, ProviderFile().open)

    [upload_id] = s3.aborted
    assert s3.list_multipart_uploads()["Uploads"] == [] and s3.objects == {}
    with pytest.raises(Exception, match="NoSuchUpload"):
        s3.list_parts(UploadId=upload_id)


def test_the_reader_waits_while_every_upload_slot_is_taken() -> None:
    # Given an S3 that holds every part until released
    s3 = FakeS3()
    s3.parts_held.clear()
    bound = PART * (SETTINGS.uploaders + SETTINGS.queued_parts + 1)  # parts held + the one filled
    big = bytes(range(256)) * 256  # 16 parts
    reached_bound = threading.Event()
    served = 0

    @contextmanager
    def watched(offset: int) -> Iterator[MemoryStream]:
        stream = MemoryStream(ProviderFile(big), offset, None)
        inner = stream.chunks

        def counted(size: int) -> Iterator[bytes]:
            nonlocal served
            for chunk in inner(size):
                served += len(chunk)
                if served >= bound:
                    reached_bound.set()
                yield chunk

        stream.chunks = counted  # type: ignore[method-assign]
        yield stream

    result: list[StoredObject] = []
    transfer = threading.Thread(target=lambda: result.append(store(s3, watched)))
    transfer.start()

    # When the reader has read as much as it may hold (its last chunk may reach into the next part)
    assert reached_bound.wait(30)

    # Then it reads no further until S3 takes a part: every byte it read is still in memory
    assert bound <= served < bound + SETTINGS.read_size
    assert [r for r in s3.requests if r.startswith("UploadPart")] == []
    s3.parts_held.set()
    transfer.join(30)
    assert result and s3.objects[KEY] == [big]
    # The bound also counts a full part's copy while its chunks are joined into one piece.
    assert SETTINGS.memory_bound == bound + PART + SETTINGS.read_size


# --------------------------------------------------------------------------- over real HTTP


@pytest.fixture
def oss() -> Iterator[OssSimulator]:
    with OssSimulator() as sim:
        sim.put_object("rec-bucket", "a/b.wav", DATA * 4)
        yield sim


def oss_opener(oss: OssSimulator, read_timeout: float = 5.0) -> Opener:
    hosts = DownloadHosts(exact=frozenset({"127.0.0.1"}), suffixes=())
    url = oss.presign("rec-bucket", "a/b.wav", 600)
    session = requests.Session()
    return lambda offset: open_signed_url(session, url, hosts=hosts, read_timeout=read_timeout, offset=offset)


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_body_broken_off_by_the_server_resumes_with_a_range_request(oss: OssSimulator, how: str) -> None:
    oss.set_fault("truncate", at_byte=3 * PART + 17, how=how)
    s3 = FakeS3()

    stored = store(s3, oss_opener(oss))

    assert s3.objects[KEY] == [DATA * 4] and stored.sha256 == hashlib.sha256(DATA * 4).hexdigest()
    statuses = [entry.status for entry in oss.request_log]
    # A close delivers every byte before it, so the resume asks for the rest; a reset may drop
    # what the client had not read yet (even all of it: then the resume asks for the whole file)
    assert statuses == [200, 206] if how == "close" else statuses[0] == 200 and len(statuses) == 2
    assert oss.counters["bytes_sent"] - len(DATA * 4) <= 3 * PART + 17


def test_a_stalled_body_resumes_after_the_read_timeout(oss: OssSimulator) -> None:
    oss.set_fault("truncate", at_byte=5 * PART, how="stall")
    s3 = FakeS3()

    store(s3, oss_opener(oss, read_timeout=0.5))

    assert s3.objects[KEY] == [DATA * 4]
    # (the stalled request is logged only when it ends, as the simulator stops)
    assert oss.counters["stalled"] == 1 and {entry.status for entry in oss.request_log} == {206}


def test_upload_stream_feeds_the_same_engine_from_an_iterable() -> None:
    s3 = FakeS3()

    stored = upload_stream(
        s3,
        bucket="archive",
        key=KEY,
        chunks=chunks(DATA, 1000),
        expected_size=len(DATA),
        content_type="audio/wav",
        metadata={},
        part_size=PART,
    )

    assert s3.objects[KEY] == [DATA] and stored.content_type == "audio/wav"


# --------------------------------------------------------------------------- settings


BASE_ENV = {
    "RECORDINGS_BUCKET": "b",
    "LEDGER_TABLE": "t",
    "FETCH_QUEUE_URL": "q",
    "RETRY_STATE_MACHINE_ARN": "arn",
    "SOURCES_SECRET_PREFIX": "s/",
    "WEBHOOK_SECRET_PREFIX": "w/",
}


def test_the_part_size_comes_from_the_environment_within_what_s3_and_the_memory_allow() -> None:
    assert Settings.from_env(BASE_ENV).transfer == TransferSettings()
    assert Settings.from_env(BASE_ENV).transfer.memory_bound == 49 * 1024 * 1024
    assert Settings.from_env({**BASE_ENV, "TRANSFER_PART_SIZE_MIB": "5"}).transfer.part_size == 5 * 1024 * 1024
    for wrong in ("4", "65", "big"):
        with pytest.raises(ConfigError, match="TRANSFER_PART_SIZE_MIB"):
            Settings.from_env({**BASE_ENV, "TRANSFER_PART_SIZE_MIB": wrong})
