"""The README's first command: the demo archives every provider's calls and a consumer's view of
them is right. Here on free ports (a sources file may give port 0), so runs can go side by side."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from local import demo
from tests.conftest import ROOT


def test_the_demo_archives_everything_and_every_event_and_sidecar_it_emits_follows_the_schemas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = (ROOT / "local" / "sources.yaml").read_text(encoding="utf-8")
    sources = tmp_path / "sources.yaml"
    sources.write_text(re.sub(r"(https?://127\.0\.0\.1):\d+", r"\1:0", shipped), encoding="utf-8")

    code = demo.run(sources, tmp_path / "state.json", timeout=180)

    shown = capsys.readouterr().out
    assert code == 0, shown
    archived = re.search(r"(\d+)/(\d+) recordings archived intact", shown)
    assert archived and archived.group(1) == archived.group(2)
    # Every RecordingArchived event the demo's consumer received, and every sidecar, was checked
    # against schemas/ (local.consumer_contract) and found valid: one event per stored file.
    consumer = re.search(r"a consumer received (\d+) RecordingArchived events for (\d+) files .*: all valid", shown)
    assert consumer and int(consumer.group(2)) == int(archived.group(2)), shown
