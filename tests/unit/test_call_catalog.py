"""The Athena call catalogue: its partition projection computes exactly the prefixes under which
the fetcher writes each call's catalogue copy, and the table's columns are the sidecar schema's."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pytest

from callvault.keys import catalog_key, catalog_key_of_folder, recording_key, sidecar_key
from tests.sam_template import ROOT, load_template

# Java DateTimeFormatter letters the projection may use, as strftime directives.
JAVA_DATE = {"yyyy": "%Y", "MM": "%m", "dd": "%d"}


@pytest.fixture(scope="module")
def table() -> dict[str, Any]:
    return load_template()["Resources"]["CallCatalogTable"]["Properties"]["TableInput"]


def projected_location(table: dict[str, Any], source: str, day: datetime) -> str:
    """The S3 prefix Athena reads for ``source = … AND day = …`` (bucket name left as is)."""
    parameters = table["Parameters"]
    template = parameters["storage.location.template"]["Fn::Sub"]
    day_format = parameters["projection.day.format"]
    for java, strftime in JAVA_DATE.items():
        day_format = day_format.replace(java, strftime)
    return template.replace("${!source}", source).replace("${!day}", day.strftime(day_format))


@pytest.mark.parametrize(
    ("source", "call_time", "call_id"),
    [
        ("office-pbx", "2026-12-02T23:59:59+08:00", "1796220055.1772"),
        ("privacy-pool", "2026-01-01T00:00:00+08:00", "e5ead776ad421a98"),
        ("shop-ccc", "2026-07-15T12:00:00-05:00", "contact id/with:odd chars"),
    ],
)
def test_the_projection_finds_the_catalogue_copy_the_fetcher_writes_for_a_call_of_that_day(
    table: dict[str, Any], source: str, call_time: str, call_id: str
) -> None:
    written = catalog_key(source, call_time, call_id)
    # The call's local day, as the ledger's call_date and the recordings' folder have it.
    location = projected_location(table, source, datetime.fromisoformat(call_time))

    assert location.startswith("s3://${RecordingsBucket}/")
    prefix = location.removeprefix("s3://${RecordingsBucket}/")
    assert written.startswith(prefix) and "/" not in written.removeprefix(prefix)
    # The catalogue copy and the sidecar beside the recordings are the same call's
    folder = recording_key(source, call_time, call_id, "x.wav").rsplit("/", 1)[0] + "/"
    assert sidecar_key(source, call_time, call_id) == folder + "call.json"
    assert catalog_key_of_folder(folder) == written


def test_the_projection_covers_every_day_a_call_can_have_and_needs_no_crawler(table: dict[str, Any]) -> None:
    parameters = table["Parameters"]
    assert parameters["projection.enabled"] == "true"
    assert [k["Name"] for k in table["PartitionKeys"]] == ["source", "day"]
    assert parameters["projection.source.type"] == "injected"  # a query names its source
    assert parameters["projection.day.type"] == "date"
    # From the earliest call time callvault accepts (callvault.timefmt.EARLIEST_CALL) to the
    # latest (a day ahead: a source east of UTC is on tomorrow's date already).
    assert parameters["projection.day.range"].split(",") == ["2000/01/01", "NOW+1DAYS"]
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"


def test_the_table_columns_are_the_sidecar_schemas_fields(table: dict[str, Any]) -> None:
    schema = json.loads((ROOT / "schemas" / "call.v1.json").read_text())
    columns = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    assert list(columns) == schema["required"]

    def fields(type_text: str) -> list[str]:
        return re.findall(r"(\w+):", type_text.split("<", 1)[1])

    call = schema["$defs"]["call"]
    assert [f for f in fields(columns["call"]) if f in call["properties"]] == call["required"]
    file_fields = schema["properties"]["files"]["items"]["required"]
    assert fields(columns["files"]) == file_fields


def test_the_catalogue_is_optional_and_off_by_default() -> None:
    template = load_template()
    assert template["Parameters"]["EnableCallCatalog"]["Default"] == "false"
    for name in ("CallCatalogDatabase", "CallCatalogTable"):
        assert template["Resources"][name]["Condition"] == "HasCallCatalog"
