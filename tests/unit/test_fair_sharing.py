"""Fair sharing between sources: each source's fetch slots cap its downloads across every
fetcher (crashes included), a job over the limit waits in the queue without losing an attempt,
every job travels in its source's message group, and the local poller serves the least busy
group first, as SQS fair queues do."""

from __future__ import annotations

import dataclasses
import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from callvault.errors import ConfigError
from callvault.fetch_slots import MAX_DEFERRAL_SECONDS, FetchSlots, deferral_delay
from callvault.jobs import JobQueue
from callvault.models import FetchJob, InvalidJob
from callvault.sources import parse_source
from local.emulator.fair_dispatch import FairBuffer
from tests.conftest import pbx_source_document
from tests.fakes import FakeTable
from tests.unit.test_fetcher import AUDIO, World, job, make_world

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_a_source_takes_no_more_slots_than_its_limit_however_many_fetchers_ask_at_once() -> None:
    slots = FetchSlots(FakeTable(), random.Random(7))
    held: list[Any] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def fetcher(number: int) -> None:
        start.wait()
        slot = slots.acquire("slow-pbx", 3, f"fetcher-{number}", lease_seconds=300, now=NOW)
        if slot is not None:
            with lock:
                held.append(slot)

    threads = [threading.Thread(target=fetcher, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(held) == 3 and len({slot.sk for slot in held}) == 3
    assert slots.load("slow-pbx", now=NOW).in_flight == 3
    # Another source is not held back by this one
    assert slots.acquire("quiet-ccc", 3, "fetcher-x", lease_seconds=300, now=NOW) is not None


def test_a_released_slot_is_free_at_once_and_a_crashed_holders_slot_when_its_lease_ends() -> None:
    slots = FetchSlots(FakeTable(), random.Random(1))
    first = slots.acquire("pbx", 1, "a", lease_seconds=300, now=NOW)
    assert first is not None
    assert slots.acquire("pbx", 1, "b", lease_seconds=300, now=NOW) is None

    slots.release(first)
    second = slots.acquire("pbx", 1, "b", lease_seconds=300, now=NOW)
    assert second is not None

    # b crashes without releasing: its slot is taken until its lease ends, then free again
    assert slots.acquire("pbx", 1, "c", lease_seconds=300, now=NOW + timedelta(seconds=299)) is None
    third = slots.acquire("pbx", 1, "c", lease_seconds=300, now=NOW + timedelta(seconds=301))
    assert third is not None
    # and b, back from the dead, cannot free the slot c holds now
    slots.release(second)
    assert slots.acquire("pbx", 1, "d", lease_seconds=300, now=NOW + timedelta(seconds=302)) is None


def test_deferred_jobs_come_back_later_each_time_but_within_a_minute() -> None:
    rng = random.Random(3)
    delays = [deferral_delay(n, rng=rng) for n in range(12)]
    assert 3 <= delays[0] <= 7
    assert all(1 <= d <= MAX_DEFERRAL_SECONDS * 1.25 for d in delays)
    assert sum(delays[6:]) > sum(delays[:6])


class Requeued:
    def __init__(self) -> None:
        self.jobs: list[tuple[FetchJob, int]] = []

    def __call__(self, job: FetchJob, delay: int) -> None:
        self.jobs.append((job, delay))


@pytest.fixture
def limited() -> tuple[World, FetchSlots, Requeued]:
    world = make_world()
    slots, requeued = FetchSlots(world.table, random.Random(5)), Requeued()
    world.fetcher._slots, world.fetcher._requeue = slots, requeued
    source = world.fetcher._sources.get("pool")
    world.fetcher._sources.sources["pool"] = dataclasses.replace(source, max_concurrent_fetches=1)  # type: ignore[attr-defined]
    return world, slots, requeued


def test_a_job_over_its_sources_limit_waits_in_the_queue_without_losing_an_attempt(
    limited: tuple[World, FetchSlots, Requeued],
) -> None:
    world, slots, requeued = limited
    world.provider.files["c1"] = {"a.wav": AUDIO}
    busy = slots.acquire("pool", 1, "another-fetcher", lease_seconds=300)
    assert busy is not None

    third_attempt = job(file_name="a.wav", attempt=3)
    report = world.fetcher.process(third_attempt, lease_seconds=60, delivery_id="m1")

    # Nothing was claimed, resolved or downloaded; the job is back in the queue for later
    assert report.deferred and not report.stored and world.provider.resolved == []
    assert ("CALL#pool#c1", "FILE#a.wav") not in world.table.items
    [(back, delay)] = requeued.jobs
    assert (back.attempt, back.deferrals, delay) == (3, 1, report.deferred)
    assert back.waiting_since is not None and slots.load("pool").waiting == 1
    assert world.workflow.handed_over == []

    # Deferred again, it keeps waiting since the first time
    again = world.fetcher.process(back, lease_seconds=60, delivery_id="m2")
    assert again.deferred and requeued.jobs[1][0].waiting_since == back.waiting_since

    # Once the slot is free the job is fetched, still on its third attempt, and waits no more
    slots.release(busy)
    done = world.fetcher.process(requeued.jobs[1][0], lease_seconds=60, delivery_id="m3")
    assert [s.key for s in done.stored] == ["recordings/pool/2026/12/01/c1/a.wav"]
    assert world.item("c1", "a.wav")["job_attempt"] == 3
    load = slots.load("pool")
    assert (load.in_flight, load.waiting) == (0, 0)


def test_a_fetch_that_fails_or_crashes_frees_its_slot(limited: tuple[World, FetchSlots, Requeued]) -> None:
    world, slots, _ = limited
    world.provider.files["c1"] = {"a.wav": AUDIO}
    world.provider.breaks = [100, 100, 100, 100, 100]  # every try breaks off: the attempt fails
    world.fetcher.process(job(file_name="a.wav"), lease_seconds=60, delivery_id="m1")
    assert world.workflow.handed_over and slots.load("pool").in_flight == 0

    world.provider.error = None
    world.provider.breaks = []
    original = world.fetcher._store

    def crash(*_: Any) -> Any:
        raise RuntimeError("the process dies mid-transfer")

    world.fetcher._store = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        world.fetcher.process(job(file_name="a.wav", attempt=2), lease_seconds=60, delivery_id="m2")
    world.fetcher._store = original  # type: ignore[method-assign]
    assert slots.load("pool").in_flight == 0


def test_each_provider_has_a_default_limit_and_a_source_may_set_its_own() -> None:
    assert parse_source(pbx_source_document()).max_concurrent_fetches == 2
    assert parse_source(pbx_source_document(max_concurrent_fetches=1)).max_concurrent_fetches == 1
    for bad in (0, 101, "3", True):
        with pytest.raises(ConfigError, match="max_concurrent_fetches"):
            parse_source(pbx_source_document(max_concurrent_fetches=bad))


def test_a_deferral_count_from_a_queue_message_is_checked_like_every_field() -> None:
    good = job().to_dict()
    assert FetchJob.from_dict({**good, "deferrals": 4, "waiting_since": "2026-12-02T12:00:00+00:00"}).deferrals == 4
    bad_values = (
        {"deferrals": -1},
        {"deferrals": "4"},
        {"deferrals": True},
        {"waiting_since": "yesterday"},
        {"waiting_since": "2026-01-01"},  # no time zone: could never be compared with the clock
    )
    for bad in bad_values:
        with pytest.raises(InvalidJob):
            FetchJob.from_dict({**good, **bad})


@mock_aws
def test_every_job_travels_in_its_sources_message_group_and_a_deferred_one_after_its_delay() -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="fetch")["QueueUrl"]
    queue = JobQueue(sqs, url)

    queue.enqueue([job(), dataclasses.replace(job(), source_id="other")])
    queue.enqueue([job("c2")], delay_seconds=30)

    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"])
    groups = sorted(m["Attributes"]["MessageGroupId"] for m in received["Messages"])
    assert groups == ["other", "pool"]  # the deferred one is not visible yet


def test_the_local_poller_serves_the_least_busy_source_first() -> None:
    def message(group: str, number: int) -> dict[str, Any]:
        return {"MessageId": f"{group}-{number}", "Attributes": {"MessageGroupId": group}}

    # A slow source's backlog came first; a quiet source's two jobs after it
    backlog = [message("slow-pbx", n) for n in range(6)] + [message("quiet-ccc", n) for n in range(2)]
    buffer = FairBuffer(lambda count, wait: [backlog.pop(0) for _ in range(min(count, len(backlog)))], hold=10)

    taken = [buffer.take(1, 0)[0]["MessageId"] for _ in range(4)]

    # Not first in, first out (all six slow jobs first): the quiet source's jobs go as soon as
    # the slow source has more in flight than it, ties going to the older message
    assert taken == ["slow-pbx-0", "quiet-ccc-0", "slow-pbx-1", "quiet-ccc-1"]
    buffer.done([{"Attributes": {"MessageGroupId": "slow-pbx"}}] * 2)
    assert buffer.take(1, 0)[0]["MessageId"] == "slow-pbx-2"
