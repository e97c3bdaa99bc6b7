"""Source documents are validated at the edge, with errors that name the field."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from callvault.errors import ConfigError
from callvault.sources import parse_source
from callvault.sources_file import load_sources_file
from tests.conftest import pbx_source_document


def test_a_pbx_source_keeps_only_the_md5_of_its_password() -> None:
    source = parse_source(pbx_source_document())

    assert source.settings.password_md5 == hashlib.md5(b"apipass").hexdigest()
    assert source.settings.url("recording/download") == "http://pbx.invalid:8088/api/v1.1.0/recording/download"


def test_api_versions_can_differ_per_operation_as_in_the_seed_documents() -> None:
    document = pbx_source_document()
    document["pbx"]["api_versions"] = {"recording/get_random": "v0.0.1"}

    settings = parse_source(document).settings

    assert settings.url("recording/get_random").endswith("/api/v0.0.1/recording/get_random")
    assert settings.url("recording/download").endswith("/api/v1.1.0/recording/download")


def test_webhook_allowlist_accepts_addresses_and_ranges() -> None:
    source = parse_source(pbx_source_document(allowed_ips=["10.1.0.0/16", "192.0.2.7"]))

    assert source.allows_ip("10.1.200.3") and source.allows_ip("192.0.2.7")
    assert not source.allows_ip("192.0.2.8") and not source.allows_ip("not-an-ip")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "Office PBX"}, "id must match"),
        ({"id": "office-pbx\n"}, "id must match"),
        ({"provider": "asterisk"}, "unknown provider"),
        ({"webhook_token": "short"}, "webhook_token"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"allowed_ips": ["10.0.0.300"]}, "allowed_ips"),
        ({"colour": "blue"}, "unknown fields colour"),
        ({"pbx": {"base_url": "192.168.1.1", "username": "api", "password": "x"}}, "base_url"),
        ({"pbx": {"base_url": "https://pbx:8088", "username": "api"}}, "password"),
        ({"pbx": {"base_url": "https://pbx:8088", "username": "api", "password": "x", "api_version": "1.1"}}, "v1.1.0"),
        (
            {"pbx": {"base_url": "https://pbx", "username": "a", "password": "x", "api_versions": {"download": "v1"}}},
            "unknown operation",
        ),
        ({"pbx": {"base_url": "https://pbx", "username": "a", "password": "x", "ca_bundle": "nope"}}, "PEM"),
    ],
)
def test_bad_source_documents_name_what_is_wrong(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_source(pbx_source_document(**change))


def test_sources_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist"):
        load_sources_file(missing)

    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sources_file(bad)

    twice = tmp_path / "twice.yaml"
    twice.write_text(
        "sources:\n"
        "  - {id: a, provider: pbx, webhook_token: aaaaaaaaaaaaaaaaaa,"
        " pbx: {base_url: 'http://h', username: u, password: p}}\n"
        "  - {id: a, provider: pbx, webhook_token: aaaaaaaaaaaaaaaaaa,"
        " pbx: {base_url: 'http://h', username: u, password: p}}\n"
    )
    with pytest.raises(ConfigError, match="appears twice"):
        load_sources_file(twice)


def test_the_shipped_local_sources_file_is_valid(root: Path) -> None:
    assert [raw["id"] for raw in load_sources_file(root / "local" / "sources.yaml")]


def test_the_directory_reads_sources_from_secrets_manager_and_remembers_unknown_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    import boto3
    from moto import mock_aws

    from callvault.errors import SourceNotFound
    from callvault.sources import SourceDirectory

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        directory = SourceDirectory(client, "callvault/dev/sources/", ttl_seconds=60)
        with pytest.raises(SourceNotFound):
            directory.get("office-pbx")

        client.create_secret(Name="callvault/dev/sources/office-pbx", SecretString=json.dumps(pbx_source_document()))

        with pytest.raises(SourceNotFound):  # junk ids cost one read per TTL, not one per request
            directory.get("office-pbx")
        assert SourceDirectory(client, "callvault/dev/sources/").get("office-pbx").id == "office-pbx"
        assert [s.id for s in SourceDirectory(client, "callvault/dev/sources/").all()[0]] == ["office-pbx"]
