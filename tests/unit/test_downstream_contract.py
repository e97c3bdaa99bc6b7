"""What consumers get for each archived or given-up file: the call.json sidecar (beside the
recordings and in the call catalogue), the RecordingArchived / RecordingFailed events, valid
against schemas/; the debt kept in the ledger until both are out; participants under the source's
policy in every output; retention tags and the sha256 on every object."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from callvault.announcements import Announcer, sources_lookup
from callvault.config import RetrySettings, TransferSettings
from callvault.errors import PermanentFailure
from callvault.fetching import Fetcher
from callvault.ledger import ARCHIVED, FAILED, RecordingLedger
from callvault.models import FetchJob
from callvault.participants import ParticipantPolicy
from callvault.retention import object_tags, tagging
from local.consumer_contract import problems
from tests.fakes import FakeEvents, FakeS3, FakeTable
from tests.unit.test_fetcher import AUDIO, MemoryProvider, Sources, Workflow, pool_source

ZONE = ZoneInfo("Asia/Shanghai")
CALLER, CALLEE = "+86 138-0013-8000", "13900139000"
FOLDER = "recordings/pool/2026/12/01/c1/"
SIDECAR = FOLDER + "call.json"
CATALOG = "calls/pool/2026/12/01/c1.json"


@dataclasses.dataclass
class Archive:
    provider: MemoryProvider
    table: FakeTable
    s3: FakeS3
    events: FakeEvents
    workflow: Workflow
    fetcher: Fetcher
    announcer: Announcer

    def sidecar(self, key: str = SIDECAR) -> dict[str, Any]:
        return json.loads(self.s3.objects[key][-1])

    def owed(self) -> list[tuple[str, str]]:
        return sorted((i["sk"], i["announce"]) for i in self.table.items.values() if "announce" in i)


def archive(
    policy: ParticipantPolicy | None = None,
    retention_class: str = "standard",
    *,
    table: FakeTable | None = None,
    s3: FakeS3 | None = None,
) -> Archive:
    """A fetcher with its announcer; ``table`` and ``s3`` to share them with another delivery."""
    provider, events, workflow = MemoryProvider(), FakeEvents(), Workflow()
    table, s3 = table or FakeTable(), s3 or FakeS3()
    provider.name = "pbx"  # events name the provider: one the schema knows
    source = pool_source(provider, participants=policy or ParticipantPolicy(), retention_class=retention_class)
    sources = Sources(source)
    ledger = RecordingLedger(table)
    announcer = Announcer(
        ledger=ledger,
        s3=s3,
        open_events=lambda: events,
        bucket="archive",
        event_bus="default",
        source_of=sources_lookup(sources.get),  # type: ignore[arg-type]
        tags=lambda found: tagging(object_tags(found.retention_class if found else None)),
    )
    fetcher = Fetcher(
        sources=sources,  # type: ignore[arg-type]
        ledger=ledger,
        s3=s3,
        bucket="archive",
        runtime=None,  # type: ignore[arg-type]
        workflow=workflow,  # type: ignore[arg-type]
        retry=RetrySettings(max_attempts=2),
        transfer=TransferSettings(part_size=4096, read_size=1024),
        announcer=announcer,
    )
    return Archive(provider, table, s3, events, workflow, fetcher, announcer)


def pbx_job(file_name: str = "*", **changes: Any) -> FetchJob:
    job = FetchJob(
        source_id="pool",
        provider="pbx",
        call_id="c1",
        call_time="2026-12-01T10:00:00+08:00",
        locator={"call": "c1"},
        file_name=file_name,
        details={"callfrom": CALLER, "callto": CALLEE, "type": "Inbound", "callduraction": "95"},
    )
    return dataclasses.replace(job, **changes)


def test_a_transferred_call_gets_one_sidecar_listing_all_three_files_the_late_one_included() -> None:
    world = archive()
    # The call was transferred: the provider lists two legs now, a third recording comes later.
    world.provider.files["c1"] = {"leg-1.wav": AUDIO, "leg-2.wav": AUDIO[::-1]}
    world.fetcher.process(pbx_job(), lease_seconds=60, delivery_id="m1")
    first = world.sidecar()
    assert [f["file_name"] for f in first["files"]] == ["leg-1.wav", "leg-2.wav"]

    world.provider.files["c1"] = {"late.mkv": AUDIO[:5000]}
    world.fetcher.process(pbx_job("late.mkv"), lease_seconds=60, delivery_id="m2")

    sidecar = world.sidecar()
    assert problems("call.json", sidecar) == []
    assert [(f["file_name"], f["key"], f["size"], f["sha256"]) for f in sidecar["files"]] == [
        ("late.mkv", FOLDER + "late.mkv", 5000, hashlib.sha256(AUDIO[:5000]).hexdigest()),
        ("leg-1.wav", FOLDER + "leg-1.wav", len(AUDIO), hashlib.sha256(AUDIO).hexdigest()),
        ("leg-2.wav", FOLDER + "leg-2.wav", len(AUDIO), hashlib.sha256(AUDIO[::-1]).hexdigest()),
    ]
    assert sidecar["call"]["started_at"] == "2026-12-01T02:00:00Z"
    assert sidecar["call"]["started_at_local"] == "2026-12-01T10:00:00+08:00"
    assert (sidecar["call"]["duration_seconds"], sidecar["call"]["direction"]) == (95, "inbound")
    # The catalogue's copy is the same document, one JSON object on one line (what Athena reads).
    assert world.s3.objects[CATALOG][-1] == world.s3.objects[SIDECAR][-1]
    assert world.s3.objects[CATALOG][-1].count(b"\n") == 1
    # One event per file, each valid, and nothing owed any more.
    archived = world.events.details(ARCHIVED)
    assert sorted(e["file_name"] for e in archived) == ["late.mkv", "leg-1.wav", "leg-2.wav"]
    assert all(problems(ARCHIVED, e) == [] for e in archived)
    assert len({e["event_id"] for e in archived}) == 3
    assert world.owed() == []


def test_a_file_stored_while_the_sidecar_is_written_is_in_the_sidecar_all_the_same() -> None:
    world = archive()
    world.provider.files["c1"] = {"a.wav": AUDIO}
    other = archive(table=world.table, s3=world.s3)  # a concurrent delivery of another file of the call
    other.provider.files["c1"] = {"b.wav": AUDIO[::-1]}

    # The other delivery stores b.wav right after this one read the ledger for its sidecar,
    # and its own sidecar write lands first: this one must not leave b.wav out.
    original_put = world.s3.put_object
    raced = []

    def put_object(**params: Any) -> dict[str, str]:
        if params["Key"] == SIDECAR and not raced:
            raced.append(True)
            other.fetcher.process(pbx_job("b.wav"), lease_seconds=60, delivery_id="m2")
        return original_put(**params)

    world.s3.put_object = put_object  # type: ignore[method-assign]
    world.fetcher.process(pbx_job("a.wav"), lease_seconds=60, delivery_id="m1")

    assert [f["file_name"] for f in world.sidecar()["files"]] == ["a.wav", "b.wav"]
    assert world.s3.objects[CATALOG][-1] == world.s3.objects[SIDECAR][-1]


def test_an_event_bridge_outage_leaves_the_event_owed_and_the_sweep_sends_it() -> None:
    world = archive()
    world.provider.files["c1"] = {"a.wav": AUDIO}
    world.events.refuse = True

    report = world.fetcher.process(pbx_job("a.wav"), lease_seconds=60, delivery_id="m1")

    assert [s.key for s in report.stored] == [FOLDER + "a.wav"]  # the recording is archived all the same
    assert world.owed() == [("FILE#a.wav", ARCHIVED)]
    assert world.announcer.sweep() == {ARCHIVED: 0, FAILED: 0, "still_owed": 0}  # too fresh: the fetcher's
    assert world.announcer.sweep(older_than=timedelta(0))["still_owed"] == 1

    world.events.refuse = False
    assert world.announcer.sweep(older_than=timedelta(0))[ARCHIVED] == 1
    [event] = world.events.details(ARCHIVED)
    assert problems(ARCHIVED, event) == [] and event["key"] == FOLDER + "a.wav"
    assert world.owed() == []


def test_a_sidecar_s3_would_not_take_is_written_by_the_sweep() -> None:
    world = archive()
    world.provider.files["c1"] = {"a.wav": AUDIO}
    original_put = world.s3.put_object

    def put_object(**params: Any) -> dict[str, str]:
        if params["Key"] == SIDECAR:
            raise RuntimeError("S3 is unavailable")
        return original_put(**params)

    world.s3.put_object = put_object  # type: ignore[method-assign]
    world.fetcher.process(pbx_job("a.wav"), lease_seconds=60, delivery_id="m1")
    assert SIDECAR not in world.s3.objects and world.events.entries == []
    assert world.owed() == [("FILE#a.wav", ARCHIVED)]

    world.s3.put_object = original_put  # type: ignore[method-assign]
    world.announcer.sweep(older_than=timedelta(0))
    assert [f["file_name"] for f in world.sidecar()["files"]] == ["a.wav"]
    assert len(world.events.details(ARCHIVED)) == 1 and world.owed() == []


def test_a_given_up_file_gets_a_recording_failed_event_from_the_workflow_or_the_sweep() -> None:
    world = archive()
    world.provider.error = PermanentFailure("provider has no such recording")
    world.fetcher.process(pbx_job("gone.wav"), lease_seconds=60, delivery_id="m1")

    # What the workflow's event says of the call, built by the fetcher at hand-over.
    [handed] = world.workflow.failed_events
    assert set(handed) == {"version", "event_id", "file_name", "call"} and handed["file_name"] == "gone.wav"

    # The workflow marks the item FAILED and owes the event (statemachine/retry.asl.json);
    # should its PutEvents fail, the sweep sends the same event (same id).
    key = {"pk": "CALL#pool#c1", "sk": "FILE#gone.wav"}
    world.table.update_item(
        Key=key,
        UpdateExpression="SET #s = :f, #a = :one, #e = :e, #ar = :r, #t = :t, #an = :an",
        ExpressionAttributeNames={
            "#s": "status",
            "#a": "attempt",
            "#e": "error",
            "#ar": "alert_reason",
            "#t": "failed_at",
            "#an": "announce",
        },
        ExpressionAttributeValues={
            ":f": "FAILED",
            ":one": 1,
            ":e": "PermanentFailure",
            ":r": "provider has no such recording",
            ":t": "2026-12-01T02:10:00.123Z",
            ":an": FAILED,
        },
    )
    assert world.announcer.sweep(older_than=timedelta(0))[FAILED] == 1
    [event] = world.events.details(FAILED)
    assert problems(FAILED, event) == []
    assert (event["event_id"], event["call"]) == (handed["event_id"], handed["call"])
    assert (event["reason"], event["failed_at"]) == ("provider has no such recording", "2026-12-01T02:10:00Z")
    assert world.owed() == []


@pytest.mark.parametrize(
    ("policy", "caller", "callee"),
    [
        (ParticipantPolicy("keep"), CALLER, CALLEE),
        (ParticipantPolicy("mask"), "***8000", "***9000"),
        (
            ParticipantPolicy("hash", "k" * 32),
            "hmac-sha256:" + __import__("hmac").new(b"k" * 32, b"+8613800138000", "sha256").hexdigest(),
            "hmac-sha256:" + __import__("hmac").new(b"k" * 32, b"13900139000", "sha256").hexdigest(),
        ),
    ],
    ids=["keep", "mask", "hash"],
)
def test_participants_leave_as_the_source_says_in_every_output(
    policy: ParticipantPolicy, caller: str, callee: str, caplog: pytest.LogCaptureFixture
) -> None:
    world = archive(policy)
    # A PBX writes both numbers into its file names
    named = "exten-8613800138000-13900139000-20261201-100000-c1.wav"
    world.provider.files["c1"] = {named: AUDIO}
    world.fetcher.process(pbx_job(named), lease_seconds=60, delivery_id="m1")
    world.provider.error = PermanentFailure(f"provider refused the call of {CALLEE}")
    world.fetcher.process(pbx_job("exten-13900139000.wav"), lease_seconds=60, delivery_id="m2")

    expected = [{"role": "caller", "number": caller}, {"role": "callee", "number": callee}]
    assert world.sidecar()["call"]["participants"] == expected
    assert world.events.details(ARCHIVED)[0]["call"]["participants"] == expected
    assert world.workflow.failed_events[0]["call"]["participants"] == expected
    stored_as = world.sidecar()["files"][0]["key"].rsplit("/", 1)[1]
    failed_as = world.workflow.failed_events[0]["file_name"]
    if policy.mode == "keep":
        assert (stored_as, failed_as) == (named, "exten-13900139000.wav")
        return
    # The numbers in the file names are masked where the file is stored and announced ...
    assert stored_as == "exten-xxxxxxxxx8000-xxxxxxx9000-20261201-100000-c1.wav"
    assert failed_as == "exten-xxxxxxx9000.wav"
    assert world.events.details(ARCHIVED)[0]["file_name"] == stored_as
    outputs = (
        json.dumps(list(world.s3.objects))
        + world.s3.objects[SIDECAR][-1].decode()
        + json.dumps(world.events.entries)
        + json.dumps(world.workflow.failed_events)
    )
    # ... and no output, log lines included, carries a number
    logged = json.dumps([{k: str(v) for k, v in vars(record).items()} for record in caplog.records])
    for raw in ("13800138000", "138-0013-8000", CALLEE):
        assert raw not in outputs and raw not in logged
    # while the ledger keeps the provider's name, the file's identity
    assert ("CALL#pool#c1", f"FILE#{named}") in world.table.items


def test_every_object_carries_its_sources_retention_class_and_its_sha256() -> None:
    world = archive(retention_class="archive")
    big = AUDIO * 2  # several parts: a multipart upload
    world.provider.files["c1"] = {"small.wav": AUDIO[:3000], "big.wav": big}
    world.fetcher.process(pbx_job(), lease_seconds=60, delivery_id="m1")

    assert world.s3.tags[FOLDER + "small.wav"] == {"callvault-retention": "archive"}
    assert world.s3.metadata[FOLDER + "small.wav"]["sha256"] == hashlib.sha256(AUDIO[:3000]).hexdigest()
    # A multipart upload's metadata is fixed before the bytes are read: its sha256 is a tag.
    assert world.s3.tags[FOLDER + "big.wav"] == {
        "callvault-retention": "archive",
        "sha256": hashlib.sha256(big).hexdigest(),
    }
    assert world.s3.tags[SIDECAR] == world.s3.tags[CATALOG] == {"callvault-retention": "archive"}


def test_a_recording_the_provider_calls_call_json_never_meets_the_sidecar() -> None:
    world = archive()
    world.provider.files["c1"] = {"call.json": AUDIO}
    [stored] = world.fetcher.process(pbx_job(), lease_seconds=60, delivery_id="m1").stored

    assert stored.key != SIDECAR and stored.key.startswith(FOLDER + "call~")
    assert world.s3.objects[stored.key] == [AUDIO]
    assert [f["key"] for f in world.sidecar()["files"]] == [stored.key]


def test_a_fault_in_announcing_never_costs_the_archived_recording_and_the_sweep_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = archive()
    world.provider.files["c1"] = {"a.wav": AUDIO, "b.wav": AUDIO[::-1]}

    def broken(*_: Any) -> None:
        raise KeyError("size")  # a bug in announcing, not S3 or EventBridge trouble

    monkeypatch.setattr(world.announcer, "archived", broken)
    report = world.fetcher.process(pbx_job(), lease_seconds=60, delivery_id="m1")

    # Both files are archived and recorded; both announcements stay owed
    assert sorted(s.key for s in report.stored) == [FOLDER + "a.wav", FOLDER + "b.wav"]
    assert world.owed() == [("FILE#a.wav", ARCHIVED), ("FILE#b.wav", ARCHIVED)]

    # An item the sweep cannot announce does not keep it from the others
    monkeypatch.undo()
    del world.table.items[("CALL#pool#c1", "FILE#a.wav")]["size"]
    counts = world.announcer.sweep(older_than=timedelta(0))
    assert counts["still_owed"] >= 1
    assert ("FILE#a.wav", ARCHIVED) in world.owed()


def test_a_call_erased_while_its_sidecar_is_written_gets_neither_sidecar_nor_event() -> None:
    world = archive()
    world.provider.files["c1"] = {"a.wav": AUDIO}
    original_put = world.s3.put_object

    def put_object(**params: Any) -> dict[str, str]:
        reply = original_put(**params)
        if params["Key"] == CATALOG:
            # callvault erase tombstones the call right after this writer's write
            item = world.table.items[("CALL#pool#c1", "FILE#a.wav")]
            world.table.items[("CALL#pool#c1", "FILE#a.wav")] = {
                "pk": item["pk"],
                "sk": item["sk"],
                "status": "ERASED",
                "source_id": "pool",
                "call_id": "c1",
            }
        return reply

    world.s3.put_object = put_object  # type: ignore[method-assign]
    world.fetcher.process(pbx_job("a.wav"), lease_seconds=60, delivery_id="m1")

    # The writer found the tombstone on its re-read and took back what it wrote; no event
    assert sorted(world.s3.deleted) == [(CATALOG, "v1"), (SIDECAR, "v1")]
    assert world.events.entries == []
