"""Providers list the calls of a window over real HTTP, the way reconciliation asks them.

CCC's ListCallDetailRecords is paged (100 a page; 2020-07-01 fills TotalCount on the first page
only); a PBX's CDR download takes a fresh single-use random and a live token. No AWS here: the
PBX token lives in a small in-memory stand-in for the provider state table.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from callvault.errors import PermanentFailure, RetryLater
from callvault.http import HttpClients
from callvault.providers.ccc import PROVIDER as CCC
from callvault.providers.interface import ProviderRuntime, TimeWindow
from callvault.providers.pbx import PROVIDER as PBX
from callvault.sources import parse_source
from local.simulators.ccc import CccSimulator
from local.simulators.pbx import PbxSimulator
from tests.conftest import ccc_source_document, pbx_source_document

ACCESS = {"LTAI-list-key": "list-secret"}
ZONE = ZoneInfo("Asia/Shanghai")


class MemoryState:
    """ProviderState's interface, in memory (the PBX session token lives here)."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, source_id: str, name: str) -> dict[str, Any] | None:
        return self.items.get((source_id, name))

    def put(self, source_id: str, name: str, values: dict[str, Any]) -> None:
        self.items[(source_id, name)] = dict(values)

    def delete_if(self, source_id: str, name: str, attribute: str, expected: str) -> None:
        if (self.items.get((source_id, name)) or {}).get(attribute) == expected:
            self.items.pop((source_id, name))


def runtime() -> ProviderRuntime:
    return ProviderRuntime(http=HttpClients(), state=MemoryState(), webhook_base_url="http://127.0.0.1:9")  # type: ignore[arg-type]


def window_around_now(settled: timedelta = timedelta(0)) -> TimeWindow:
    now = datetime.now(UTC)
    return TimeWindow(start=now - timedelta(hours=1), end=now + timedelta(minutes=1), settled_before=now + settled)


@pytest.fixture
def ccc_2020() -> Iterator[CccSimulator]:
    with CccSimulator(instance_id="list-2020", credentials=ACCESS, api_versions=("2020-07-01",)) as sim:
        yield sim


def ccc_source(sim: CccSimulator, version: str, **ccc: Any) -> Any:
    document = ccc_source_document(version)
    access = {"access_key_id": "LTAI-list-key", "access_key_secret": "list-secret", "download_hosts": ["127.0.0.1"]}
    document["ccc"] = {**document["ccc"], **access, "instance_id": sim.instance_id, "endpoint": sim.base_url, **ccc}
    return parse_source(document)


def test_ccc_2020_lists_every_page_though_total_count_comes_only_with_the_first(ccc_2020: CccSimulator) -> None:
    # Given 150 calls: two pages of 100
    calls = [ccc_2020.place_call(duration_s=10, ready_after_s=0) for _ in range(150)]
    unready = ccc_2020.place_call(duration_s=10, ready_after_s=3600)
    source = ccc_source(ccc_2020, "2020-07-01", reconcile_recordings=["mono", "multichannel"])

    listing = CCC.list_calls(source, window_around_now(), runtime())

    assert listing.calls == 151 and listing.problems == []
    selectors = {(job.call_id, job.file_name) for job in listing.jobs}
    assert selectors == {(c.contact_id, kind) for c in calls for kind in ("*mono", "*multichannel")}
    assert unready.contact_id not in {job.call_id for job in listing.jobs}  # RecordingReady false
    [job] = [j for j in listing.jobs if j.call_id == calls[0].contact_id and j.file_name == "*mono"]
    assert job.locator == {"recording": "mono", "contact_id": calls[0].contact_id}
    assert ccc_2020.counters["action:ListCallDetailRecords"] == 2


def test_ccc_2017_lists_recorded_calls_and_defers_those_still_settling() -> None:
    with CccSimulator(instance_id="list-2017", credentials=ACCESS) as sim:
        recorded = sim.place_call(duration_s=10, ready_after_s=0)
        silent = sim.place_call(duration_s=10, recorded=False)
        source = ccc_source(sim, "2017-07-05")

        listing = CCC.list_calls(source, window_around_now(), runtime())
        later = CCC.list_calls(source, window_around_now(settled=-timedelta(minutes=5)), runtime())

    assert [(job.call_id, job.file_name) for job in listing.jobs] == [(recorded.contact_id, "*")]
    assert listing.calls == 2 and silent.contact_id not in {job.call_id for job in listing.jobs}
    assert (later.jobs, later.deferred) == ([], 2)  # both ended after "five minutes ago"


def test_ccc_2017_reads_a_long_window_in_spans_of_seven_days() -> None:
    with CccSimulator(instance_id="list-long", credentials=ACCESS) as sim:
        sim.place_call(duration_s=10, ready_after_s=0)
        source = ccc_source(sim, "2017-07-05")
        now = datetime.now(UTC)
        window = TimeWindow(start=now - timedelta(days=20), end=now + timedelta(minutes=1), settled_before=now)

        listing = CCC.list_calls(source, window, runtime())

        assert len(listing.jobs) == 1
        assert sim.counters["action:ListCallDetailRecords"] == 3  # 7 + 7 + 6 days


def test_ccc_refusals_are_reported_as_the_fetch_errors_they_are() -> None:
    with CccSimulator(instance_id="list-other", credentials=ACCESS) as sim:
        source = ccc_source(sim, "2017-07-05", instance_id="not-this-one")
        with pytest.raises(PermanentFailure, match="instance does not exist"):
            CCC.list_calls(source, window_around_now(), runtime())


def test_a_pbx_lists_its_recorded_calls_from_a_fresh_cdr_download() -> None:
    with PbxSimulator(tz=ZONE) as sim:
        source = parse_source(
            pbx_source_document(
                pbx={
                    "base_url": sim.base_url,
                    "username": "api",
                    "password": "apipass",
                    "api_versions": {"cdr/get_random": "v0.0.1", "cdr/download": "v0.0.1"},
                }
            )
        )
        start = datetime.now(ZONE).replace(microsecond=0) - timedelta(minutes=10)
        recorded = sim.place_call(duration_s=30, start=start, push=False)
        sim.place_call(recorded=False, start=start, push=False)
        pbx_runtime = runtime()

        first = PBX.list_calls(source, window_around_now(), pbx_runtime)
        sim.expire_all_tokens()  # the shared token died meanwhile: one re-login, then the list
        second = PBX.list_calls(source, window_around_now(), pbx_runtime)

        assert [job.call_id for job in first.jobs] == [recorded.callid] == [job.call_id for job in second.jobs]
        assert first.calls == 2 and first.audit and recorded.callid.encode() in first.audit
        assert sim.counters["cdr_downloads_ok"] == 2 and sim.counters["logins_ok"] == 2
        # The seed's quoting: the times travel in the query (spaces encoded), the random once.
        downloads = [path for method, path, _ in sim.request_log if "cdr/download" in path]
        assert all("starttime=" in path and "%20" in path for path in downloads)


def test_a_pbx_that_keeps_refusing_cdr_randoms_fails_the_listing_for_a_later_run() -> None:
    with PbxSimulator(tz=ZONE) as sim:
        source = parse_source(
            pbx_source_document(pbx={"base_url": sim.base_url, "username": "api", "password": "apipass"})
        )
        sim.set_fault("expire_random", count=3)
        with pytest.raises(RetryLater, match="refused 3 fresh CDR download links"):
            PBX.list_calls(source, window_around_now(), runtime())
