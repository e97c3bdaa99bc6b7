"""One fetch attempt, every way it can end, against in-memory stand-ins (tests/fakes.py) and a
provider made for the test: stored, skipped, handed to the retry workflow, failed, noted."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from callvault.config import RetrySettings, TransferSettings
from callvault.errors import FetchError, PermanentFailure, RetryKind, RetryLater, SourceNotFound
from callvault.fetching import Fetcher
from callvault.ledger import RecordingLedger
from callvault.models import FetchJob
from callvault.providers.interface import PendingDownload, ReconcileSettings, Source
from tests.fakes import FakeS3, FakeTable, chunks

AUDIO = b"RIFF" + bytes(range(256)) * 64


class BytesStream:
    """A download of ``data`` from byte ``start``; it breaks off (connection reset) at ``break_at``."""

    def __init__(self, data: bytes, start: int, break_at: int | None = None) -> None:
        self.data = data
        self.start = start
        self.total_size = len(data)
        self.content_length = len(data) - start
        self.content_type = "audio/wav"
        self.break_at = break_at

    def chunks(self, size: int) -> Iterator[bytes]:
        yield from chunks(self.data[self.start : self.break_at], size)
        if self.break_at is not None:
            raise requests.ConnectionError("connection reset by peer")


class MemoryProvider:
    """A provider whose calls' files are bytes in memory; it can refuse, break a download off at
    the bytes listed in ``breaks`` (one per request), or find a resume's link expired."""

    name = "test"
    reconcile_defaults = ReconcileSettings()
    default_max_concurrent_fetches = 2

    def __init__(self) -> None:
        self.files: dict[str, dict[str, bytes]] = {}
        self.error: FetchError | None = None
        self.breaks: list[int] = []
        self.link_expires_on_resume = False
        self.resolved: list[str] = []
        self.opened: list[str] = []
        self.requests: list[tuple[str, int]] = []  # (file, offset) of every download request

    def resolve(self, source: Source, job: FetchJob, runtime: Any) -> list[PendingDownload]:
        self.resolved.append(job.identity)
        if self.error is not None:
            raise self.error
        files = self.files.get(job.call_id, {})
        names = files if not job.names_a_file else {job.file_name: files[job.file_name]}
        link = len(self.resolved)
        return [
            PendingDownload(name, lambda offset, name=name, data=data: self._open(name, data, offset, link))
            for name, data in names.items()
        ]

    @contextmanager
    def _open(self, name: str, data: bytes, offset: int, link: int) -> Iterator[BytesStream]:
        self.requests.append((name, offset))
        if offset == 0:
            self.opened.append(name)
        elif self.link_expires_on_resume and link == 1:
            raise RetryLater(RetryKind.LINK_EXPIRED, "download link refused: HTTP 403 AccessDenied")
        yield BytesStream(data, offset, self.breaks.pop(0) if self.breaks else None)


class Sources:
    def __init__(self, *sources: Source) -> None:
        self.sources = {source.id: source for source in sources}

    def get(self, source_id: str) -> Source:
        if source_id not in self.sources:
            raise SourceNotFound(f"unknown source {source_id!r}")
        return self.sources[source_id]


class Workflow:
    def __init__(self) -> None:
        self.handed_over: list[tuple[FetchJob, Any]] = []
        self.failed_events: list[dict[str, Any]] = []

    def hand_over(
        self,
        job: FetchJob,
        plan: Any,
        key: dict[str, str],
        delivery_id: str,
        failed_event: dict[str, Any] | None = None,
    ) -> str:
        self.handed_over.append((job, plan))
        self.failed_events.append(failed_event or {})
        return "execution"


@dataclasses.dataclass
class World:
    provider: MemoryProvider
    table: FakeTable
    s3: FakeS3
    workflow: Workflow
    fetcher: Fetcher

    def item(self, call_id: str, file_name: str) -> dict[str, Any]:
        return self.table.item(f"CALL#pool#{call_id}", f"FILE#{file_name}")


@pytest.fixture
def world() -> World:
    return make_world()


def pool_source(provider: MemoryProvider, **changes: Any) -> Source:
    """The source "pool" of a MemoryProvider (``changes``: other Source fields)."""
    source = Source(
        id="pool",
        provider=provider,
        webhook_token="t" * 16,
        allowed_networks=(),
        max_body_bytes=1024,
        timezone=ZoneInfo("Asia/Shanghai"),
        retention_days=None,
        webhook_signing_secret=None,
        settings=None,
    )
    return dataclasses.replace(source, **changes)


def make_world() -> World:
    """A fetcher over in-memory stand-ins, with one source ("pool") of the MemoryProvider."""
    provider, table, s3, workflow = MemoryProvider(), FakeTable(), FakeS3(), Workflow()
    source = pool_source(provider)
    fetcher = Fetcher(
        sources=Sources(source),  # type: ignore[arg-type]
        ledger=RecordingLedger(table),
        s3=s3,
        bucket="archive",
        runtime=None,  # type: ignore[arg-type]
        workflow=workflow,  # type: ignore[arg-type]
        retry=RetrySettings(max_attempts=3),
        # Small parts: a test file of 16 KiB is a multipart upload of five parts.
        transfer=TransferSettings(part_size=4096, read_size=1024),
    )
    return World(provider, table, s3, workflow, fetcher)


def job(call_id: str = "c1", file_name: str = "*", **changes: Any) -> FetchJob:
    base = FetchJob(
        source_id="pool",
        provider="test",
        call_id=call_id,
        call_time="2026-12-01T10:00:00+08:00",
        locator={"call": call_id},
        file_name=file_name,
    )
    return dataclasses.replace(base, **changes)


def test_every_file_of_a_call_is_stored_with_its_sha256_and_the_placeholder_goes(world: World) -> None:
    world.provider.files["c1"] = {"a.wav": AUDIO, "b.mkv": AUDIO[::-1]}

    report = world.fetcher.process(job(), lease_seconds=60, delivery_id="m1")

    assert sorted(s.key for s in report.stored) == [
        "recordings/pool/2026/12/01/c1/a.wav",
        "recordings/pool/2026/12/01/c1/b.mkv",
    ]
    item = world.item("c1", "a.wav")
    assert (item["status"], item["sha256"], item["size"]) == ("STORED", hashlib.sha256(AUDIO).hexdigest(), len(AUDIO))
    assert world.s3.objects["recordings/pool/2026/12/01/c1/b.mkv"] == [AUDIO[::-1]]
    assert ("CALL#pool#c1", "FILE#*") not in world.table.items


def test_a_stored_file_is_not_downloaded_again_and_a_busy_one_is_left_to_its_holder(world: World) -> None:
    world.provider.files["c1"] = {"a.wav": AUDIO}
    world.fetcher.process(job(file_name="a.wav"), lease_seconds=60, delivery_id="m1")

    again = world.fetcher.process(job(file_name="a.wav"), lease_seconds=60, delivery_id="m2")
    assert again.already_stored and world.provider.opened == ["a.wav"]
    assert world.provider.resolved == [job(file_name="a.wav").identity]  # known up front: no provider call

    world.provider.files["c2"] = {"x.wav": AUDIO}
    world.fetcher._ledger.claim(job("c2", "x.wav"), "x.wav", "k", lease_seconds=600)  # another delivery holds it
    busy = world.fetcher.process(job("c2", "x.wav"), lease_seconds=60, delivery_id="m3")
    assert busy.in_progress and "x.wav" not in world.provider.opened


def test_a_transient_error_goes_to_the_retry_workflow_and_frees_the_file(world: World) -> None:
    world.provider.error = RetryLater(RetryKind.LINK_EXPIRED, "link expired")

    report = world.fetcher.process(job(), lease_seconds=60, delivery_id="m1")

    assert report.handed_over == "link expired"
    [(handed, plan)] = world.workflow.handed_over
    assert handed == job() and not plan.give_up and plan.wait_seconds > 0
    assert world.item("c1", "*")["status"] == "RETRY_SCHEDULED"


def test_a_transfer_that_breaks_off_resumes_in_the_same_attempt(world: World) -> None:
    world.provider.files["c1"] = {"a.wav": AUDIO}
    world.provider.breaks = [6000]  # mid-way through the second part

    report = world.fetcher.process(job(file_name="a.wav"), lease_seconds=60, delivery_id="m1")

    assert [s.sha256 for s in report.stored] == [hashlib.sha256(AUDIO).hexdigest()]
    assert world.provider.requests == [("a.wav", 0), ("a.wav", 6000)]
    assert world.s3.objects["recordings/pool/2026/12/01/c1/a.wav"] == [AUDIO]
    item = world.item("c1", "a.wav")
    assert (item["status"], int(item["attempts"])) == ("STORED", 1)


def test_a_resume_whose_link_expired_gets_a_fresh_link_from_the_provider(world: World) -> None:
    world.provider.files["c1"] = {"a.wav": AUDIO}
    world.provider.breaks = [9000]
    world.provider.link_expires_on_resume = True

    world.fetcher.process(job(), lease_seconds=60, delivery_id="m1")

    assert len(world.provider.resolved) == 2  # the job's files, then a fresh link to this one
    assert world.provider.requests == [("a.wav", 0), ("a.wav", 9000), ("a.wav", 9000)]
    assert world.item("c1", "a.wav")["status"] == "STORED"
    assert world.s3.objects["recordings/pool/2026/12/01/c1/a.wav"] == [AUDIO]


def test_a_transfer_that_keeps_breaking_leaves_no_object_and_no_open_upload(world: World) -> None:
    world.provider.files["c1"] = {"a.wav": AUDIO}
    world.provider.breaks = [5000, 6000, 7000, 8000]  # the first request and every resume allowed

    report = world.fetcher.process(job(), lease_seconds=60, delivery_id="m1")

    assert report.handed_over is not None and "broke off 4 times" in report.handed_over
    assert world.s3.objects == {} and world.s3.uploads == {} and len(world.s3.aborted) == 1
    item = world.item("c1", "a.wav")
    assert item["status"] == "RETRY_SCHEDULED" and "lease_id" not in item


def test_s3_refusing_a_part_aborts_the_upload_and_the_retried_job_archives_the_file(world: World) -> None:
    world.provider.files["c1"] = {"a.wav": AUDIO}
    world.s3.refuse_part = 3

    report = world.fetcher.process(job(file_name="a.wav"), lease_seconds=60, delivery_id="m1")

    # No part left behind; the retry workflow has the job, and the ledger says why
    assert world.s3.list_multipart_uploads()["Uploads"] == [] and len(world.s3.aborted) == 1
    assert report.handed_over == "S3 could not upload part 3 (InternalError); the upload was aborted"
    [(handed, plan)] = world.workflow.handed_over
    assert (plan.error, plan.give_up) == ("StorageUnavailable", False)
    item = world.item("c1", "a.wav")
    assert item["status"] == "RETRY_SCHEDULED" and "lease_id" not in item
    assert item["reason"] == report.handed_over

    world.fetcher.process(handed.next_attempt(), lease_seconds=60, delivery_id="m2")

    assert world.s3.objects["recordings/pool/2026/12/01/c1/a.wav"] == [AUDIO]
    assert world.item("c1", "a.wav")["status"] == "STORED"


def test_a_permanent_error_fails_at_once_and_an_unknown_source_is_one(world: World) -> None:
    world.provider.error = PermanentFailure("bad credentials")
    world.fetcher.process(job(), lease_seconds=60, delivery_id="m1")
    world.fetcher.process(job("c9", source_id="gone"), lease_seconds=60, delivery_id="m2")

    assert [plan.give_up for _, plan in world.workflow.handed_over] == [True, True]
    assert world.item("c1", "*")["status"] == "FAILED"
    assert "not registered" in world.table.item("CALL#gone#c9", "FILE#*")["reason"]


def test_a_call_nothing_confirmed_was_recorded_ends_no_recording_without_the_workflow(world: World) -> None:
    world.provider.error = RetryLater(RetryKind.NOT_READY, "isv.RECORD_NOT_EXIST")

    world.fetcher.process(job(attempt=3, recording_confirmed=False), lease_seconds=60, delivery_id="m1")

    assert world.workflow.handed_over == []
    item = world.item("c1", "*")
    assert item["status"] == "NO_RECORDING" and "gave up after 3 attempts" in item["reason"]


def test_expectations_and_unanswered_calls_only_leave_a_note(world: World) -> None:
    world.fetcher.process(job(not_before="2026-12-01T10:30:00+00:00"), lease_seconds=60, delivery_id="m1")
    world.fetcher.process(job("c2", no_recording="not answered"), lease_seconds=60, delivery_id="m2")

    assert world.provider.resolved == []
    assert world.item("c1", "*")["status"] == "EXPECTED"
    assert world.item("c1", "*")["due_at"] == "2026-12-01T10:30:00+00:00"
    assert (world.item("c2", "*")["status"], world.item("c2", "*")["reason"]) == ("NO_RECORDING", "not answered")


def test_a_bug_frees_the_lease_and_reaches_sqs(world: World) -> None:
    world.provider.files["c1"] = {"a.wav": AUDIO}
    world.s3.complete_multipart_upload = None  # type: ignore[assignment,method-assign]

    with pytest.raises(TypeError):
        world.fetcher.process(job(file_name="a.wav"), lease_seconds=60, delivery_id="m1")

    item = world.item("c1", "a.wav")
    assert item["status"] == "RETRY_SCHEDULED" and "lease_id" not in item and world.workflow.handed_over == []


# --------------------------------------------------------------------------------------------------
# Metrics: what the fetch attempt reports to CloudWatch (EMF documents on stdout)
# --------------------------------------------------------------------------------------------------
def emf_metrics(output: str) -> list[dict[str, Any]]:
    """Each metric of the EMF documents in ``output``: name, value, unit, dimensions, properties."""
    found = []
    for line in output.splitlines():
        if not line.startswith("{") or "_aws" not in line:
            continue
        document = json.loads(line)
        [directive] = document["_aws"]["CloudWatchMetrics"]
        [dimension_names] = directive["Dimensions"]
        for metric in directive["Metrics"]:
            [value] = document[metric["Name"]]  # Powertools writes each value as a list of one
            found.append(
                {
                    "namespace": directive["Namespace"],
                    "name": metric["Name"],
                    "unit": metric["Unit"],
                    "value": value,
                    "dimensions": {name: document[name] for name in dimension_names},
                    "source_id": document.get("source_id"),
                }
            )
    return found


NOW = datetime(2026, 12, 1, 2, 5, 30, tzinfo=UTC)


def test_an_archived_file_counts_its_bytes_and_the_delay_since_the_call_ended(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("callvault.fetching.utc_now", lambda: NOW)
    world.provider.files["c1"] = {"a.wav": AUDIO}
    # A call that started 10:00:00 Beijing time and lasted 65 s, archived at 10:05:30
    ended_at_10_01_05 = job(file_name="a.wav", details={"callduraction": "65"})

    world.fetcher.process(ended_at_10_01_05, lease_seconds=60, delivery_id="m1")

    metrics = {m["name"]: m for m in emf_metrics(capsys.readouterr().out)}
    assert {name: (m["value"], m["unit"]) for name, m in metrics.items()} == {
        "RecordingsArchived": (1.0, "Count"),
        "BytesArchived": (float(len(AUDIO)), "Bytes"),
        "ArchiveDelay": (265.0, "Seconds"),
    }
    for metric in metrics.values():
        assert metric["namespace"] == "callvault"
        assert metric["dimensions"] == {"provider": "test", "service": "callvault"}
        assert metric["source_id"] == "pool"  # a property, not a dimension


def test_retries_and_give_ups_are_counted_by_provider_and_a_reason_code_never_the_reason_text(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.provider.error = RetryLater(RetryKind.THROTTLED, "Throttling.User for 13800138000")
    world.fetcher.process(job("c1"), lease_seconds=60, delivery_id="m1")
    world.provider.error = PermanentFailure("PBX has no audio file '13800138000-106.wav' (errno 10023)")
    world.fetcher.process(job("c2"), lease_seconds=60, delivery_id="m2")

    metrics = emf_metrics(capsys.readouterr().out)
    assert [(m["name"], m["value"], m["dimensions"]) for m in metrics] == [
        ("FetchRetries", 1.0, {"provider": "test", "reason": "Throttled", "service": "callvault"}),
        ("RecordingFailures", 1.0, {"provider": "test", "reason": "PermanentFailure", "service": "callvault"}),
    ]


def test_a_metric_that_cannot_be_written_costs_the_recording_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("stdout closed")

    monkeypatch.setattr("aws_lambda_powertools.metrics.EphemeralMetrics.flush_metrics", broken)
    world.provider.files["c1"] = {"a.wav": AUDIO}

    report = world.fetcher.process(job(file_name="a.wav"), lease_seconds=60, delivery_id="m1")

    assert [s.key for s in report.stored] == ["recordings/pool/2026/12/01/c1/a.wav"]
    assert world.item("c1", "a.wav")["status"] == "STORED"
