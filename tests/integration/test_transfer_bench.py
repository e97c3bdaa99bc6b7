"""The transfer benchmark's harness runs end to end at a tiny size; its figures are not judged here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.transfer import main

pytestmark = pytest.mark.integration


def test_the_transfer_benchmark_measures_every_peer_a_broken_transfer_and_every_handler(tmp_path: Path) -> None:
    out = tmp_path / "transfer.json"

    assert main(["--sizes", "1", "--runs", "1", "--cold-start-runs", "1", "--out", str(out)]) == 0

    document = json.loads(out.read_text())
    rows = {row["label"]: row for row in document["transfer"]["summary"]}
    assert sorted(rows) == sorted(
        ["download-only", "upload-only", "naive", "smart_open", "callvault", "callvault, break at 50 %"]
    )
    # Every transfer was checked before it became a figure; the break is counted where it happened.
    broken = rows["callvault, break at 50 %"]
    assert broken["redownloaded_mib"] is not None
    assert all(run["size"] == 2**20 for run in document["transfer"]["runs"] if run["peer"] == "callvault")
    functions = {row["function"] for row in document["cold_start"]["summary"]}
    assert functions == {"baseline", "webhook", "fetcher", "pbx_session_keeper", "reconciler"}
    assert document["targets"]
