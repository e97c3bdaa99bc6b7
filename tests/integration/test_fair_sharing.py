"""Fair sharing on the local stack: a source whose downloads hang holds no more fetchers than its
limit, so another source's recordings are archived meanwhile; its own jobs wait in the queue
without losing attempts, and everything arrives intact once it answers again."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from callvault.admin.target import StackTarget
from callvault.fetch_slots import FetchSlots
from local.emulator.stack import LocalStack
from local.simulators.pbx import PbxSimulator
from tests.integration.conftest import (
    ZONE,
    Archive,
    Pbx,
    post_report,
    simulated_pbx_source,
    stack_of,
    started_pbxs,
    wait_for,
)

LIMIT = 2
CALLS = 6


@pytest.fixture(scope="module")
def pbxs() -> Iterator[dict[str, Pbx]]:
    yield from started_pbxs({"hanging-pbx": PbxSimulator(tz=ZONE), "quick-pbx": PbxSimulator(tz=ZONE)})


@pytest.fixture(scope="module")
def stack(pbxs: dict[str, Pbx], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    work = tmp_path_factory.mktemp("fair")
    # A hanging PBX must not time out the attempt while the test holds it.
    patient = {"read_timeout_seconds": 120}
    sources = [
        simulated_pbx_source(pbxs["hanging-pbx"], patient, max_concurrent_fetches=LIMIT),
        simulated_pbx_source(pbxs["quick-pbx"], patient),
    ]
    # Four fetchers: without a limit the hanging PBX's jobs would take them all.
    with stack_of(work, sources, concurrency=4, env_overrides={"FETCH_DEFERRAL_MAX_SECONDS": "2"}) as running:
        yield running


def test_a_hanging_source_holds_no_more_than_its_limit_and_another_source_is_archived_meanwhile(
    stack: LocalStack, pbxs: dict[str, Pbx]
) -> None:
    archive = Archive(stack)
    slots = FetchSlots(StackTarget.local(stack.state_file).ledger_table())
    hanging, quick = pbxs["hanging-pbx"], pbxs["quick-pbx"]

    # Given a PBX that stops answering, with a backlog of calls reported first
    hanging.simulator.hang()
    slow_calls = [hanging.simulator.place_call(duration_s=10, push=False) for _ in range(CALLS)]
    for call in slow_calls:
        assert post_report(stack, hanging.source_id, call.report, token=hanging.token).status_code == 200
    wait_for(lambda: hanging.simulator.counters.get("held_at_once", 0) >= LIMIT, what="the hanging PBX's downloads")

    # When another PBX's calls end
    quick_calls = [quick.simulator.place_call(duration_s=10, push=False) for _ in range(CALLS)]
    for call in quick_calls:
        assert post_report(stack, quick.source_id, call.report, token=quick.token).status_code == 200

    # Then they are all archived while the first PBX still hangs, which never had more than its
    # limit of downloads going (one held request per download), the rest of its jobs waiting
    for call in quick_calls:
        # (not archive.settled: the stack is not idle while the other PBX hangs)
        [item] = wait_for(partial(stored, archive, quick.source_id, call.callid), what=f"call {call.callid}")
        assert item["sha256"] == call.sha256
    assert hanging.simulator.counters.get("held_at_once", 0) == LIMIT
    load = slots.load(hanging.source_id)
    assert load.in_flight == LIMIT and load.waiting >= 1

    # When the PBX answers again, every one of its recordings is archived, intact, each at the
    # first attempt: waiting for a slot cost none
    hanging.simulator.release()
    for call in slow_calls:
        [item] = archive.settled(hanging.source_id, call.callid)
        assert item["status"] == "STORED" and item["sha256"] == call.sha256
        assert int(item["attempts"]) == 1 and int(item["job_attempt"]) == 1
    assert hanging.simulator.counters.get("held_at_once", 0) == LIMIT
    wait_for(lambda: slots.in_flight(hanging.source_id) == 0, what="the slots to be free")


def stored(archive: Archive, source_id: str, call_id: str) -> list[dict[str, Any]] | None:
    files = archive.files(source_id, call_id)
    return files if files and all(f["status"] == "STORED" for f in files) else None
