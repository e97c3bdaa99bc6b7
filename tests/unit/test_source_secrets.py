"""Each source is registered twice: whole for the functions that call the provider, and without
the provider's credentials for the internet-facing webhook, which IAM lets read nothing else."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from callvault.errors import ConfigError
from callvault.jobs import JobQueue
from callvault.providers.interface import InboundRequest
from callvault.register import main as register_main
from callvault.register import refuse_loopback_addresses, secret_prefix, webhook_secret_prefix
from callvault.signed_deliveries import SignedDeliveries
from callvault.sources import SourceDirectory, parse_source, webhook_document
from callvault.sources_file import load_sources_file, publish_sources
from callvault.webhook import SIGNATURE_WINDOW, receive, signature
from tests.conftest import ccc_source_document, dypls_source_document, pbx_source_document, sample_event
from tests.fakes import FakeTable
from tests.sam_template import load_template, translated_template

DOCUMENTS = {
    "pbx": pbx_source_document(pbx={"base_url": "https://pbx.example.com:8088", "username": "api", "password": "pw"}),
    "ccc": ccc_source_document(webhook_signing_secret="forwarder-signing-secret-42"),
    "dypls": dypls_source_document(),
}
CREDENTIALS = {
    "pbx": {"password"},
    "ccc": {"access_key_id", "access_key_secret"},
    "dypls": {"access_key_id", "access_key_secret"},
}
# A call-ended event of each provider, as the provider sends it.
EVENTS = {"pbx": "pbx/newcdr.json", "ccc": "ccc/softphone-call-ended.json", "dypls": "dypls/receipts-mixed.json"}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield


# ------------------------------------------------------------------------------------ the split


@pytest.mark.parametrize("provider", sorted(DOCUMENTS))
def test_the_webhooks_copy_is_the_source_without_its_provider_credentials(provider: str) -> None:
    document = DOCUMENTS[provider]

    copy = webhook_document(document)

    assert CREDENTIALS[provider].isdisjoint(copy[provider])
    assert {k: v for k, v in document[provider].items() if k not in CREDENTIALS[provider]} == copy[provider]
    assert {k: v for k, v in copy.items() if k != provider} == {k: v for k, v in document.items() if k != provider}
    source = parse_source(copy, credentials=False)
    assert (source.webhook_token, source.webhook_signing_secret) == (
        document["webhook_token"],
        document.get("webhook_signing_secret"),
    )


@pytest.mark.parametrize("provider", sorted(DOCUMENTS))
def test_a_webhook_copy_holding_credentials_is_refused(provider: str) -> None:
    with pytest.raises(ConfigError, match="the webhook's copy of a source must not hold"):
        parse_source(DOCUMENTS[provider], credentials=False)


def test_settings_read_without_credentials_cannot_call_the_provider() -> None:
    import requests

    from callvault.providers.pbx.api import PbxClient

    pbx = parse_source(webhook_document(DOCUMENTS["pbx"]), credentials=False)
    with pytest.raises(ConfigError, match="no PBX password"):
        PbxClient(pbx.settings, requests.Session()).login(None)
    ccc = parse_source(webhook_document(DOCUMENTS["ccc"]), credentials=False)
    with pytest.raises(ConfigError, match="no access key"):
        ccc.settings.access.client("2017-07-05", requests.Session())


# ------------------------------------------------------------------------------- registration


def test_registration_writes_both_copies_and_the_webhook_needs_only_its_own(aws: None) -> None:
    secrets = boto3.client("secretsmanager")
    sqs = boto3.client("sqs")
    queue = JobQueue(sqs, sqs.create_queue(QueueName="fetch")["QueueUrl"])
    raws = list(DOCUMENTS.values())

    publish_sources(raws, secrets, secret_prefix("prod"), webhook_secret_prefix("prod"))
    # Take the whole documents away: the webhook must not need them.
    for raw in raws:
        whole = json.loads(secrets.get_secret_value(SecretId=f"callvault/prod/sources/{raw['id']}")["SecretString"])
        assert whole == raw
        secrets.delete_secret(SecretId=f"callvault/prod/sources/{raw['id']}", ForceDeleteWithoutRecovery=True)

    webhook_sources = SourceDirectory(secrets, webhook_secret_prefix("prod"), credentials=False)
    for raw in raws:
        provider = raw["provider"]
        body = json.dumps(sample_event(EVENTS[provider])).encode()
        headers = {"x-webhook-token": raw["webhook_token"]}
        if raw.get("webhook_signing_secret"):
            stamp = str(int(time.time()))
            headers |= {
                "x-callvault-timestamp": stamp,
                "x-callvault-signature": signature(raw["webhook_signing_secret"], stamp, body),
            }
        request = InboundRequest(source_id=raw["id"], body=body, headers=headers, query={}, source_ip="192.0.2.1")
        reply = receive(request, webhook_sources, queue, SignedDeliveries(FakeTable, SIGNATURE_WINDOW))
        assert reply.status_code == 200 and reply.jobs, provider


def test_registering_a_file_with_loopback_provider_addresses_is_refused(root: Path) -> None:
    with pytest.raises(ConfigError, match=r"source 'office-pbx': pbx.base_url 'http://127.0.0.1:18088' is a loopback"):
        refuse_loopback_addresses(load_sources_file(root / "local" / "sources.yaml"))
    document = dypls_source_document()
    document["dypls"]["download_hosts"] = [".aliyuncs.com", "localhost"]
    with pytest.raises(ConfigError, match=r"dypls.download_hosts 'localhost' is a loopback"):
        refuse_loopback_addresses([document])
    refuse_loopback_addresses(list(DOCUMENTS.values()))  # real addresses pass


def test_the_register_command_writes_nothing_from_the_local_sample_file(
    aws: None, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert register_main(["--stage", "prod", str(root / "local" / "sources.yaml")]) == 2
    assert "loopback" in capsys.readouterr().err
    assert boto3.client("secretsmanager").list_secrets()["SecretList"] == []


def test_the_register_command_names_both_secrets(aws: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(yaml.safe_dump({"sources": [DOCUMENTS["dypls"]]}))

    assert register_main(["--stage", "dev", str(sources_file)]) == 0

    assert capsys.readouterr().out.splitlines() == [
        "registered callvault/dev/sources/privacy-pool and callvault/dev/webhook/privacy-pool"
    ]


# ------------------------------------------------------------------------------------------ IAM

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:callvault/{stage}/{kind}/office-pbx-AbCdEf"
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}


def _branches(statement: Any) -> Iterator[dict[str, Any]]:
    """A policy statement, or both branches of an Fn::If (either may be deployed)."""
    if isinstance(statement, dict) and "Fn::If" in statement:
        for branch in statement["Fn::If"][1:]:
            yield from _branches(branch)
    elif isinstance(statement, dict) and statement != {"Ref": "AWS::NoValue"}:
        yield statement


def _resource_pattern(resource: Any, stage: str) -> str:
    """An IAM resource as its ARN pattern; anything not resolvable here counts as ``*``."""
    if isinstance(resource, str):
        return resource
    if isinstance(resource, dict) and isinstance(resource.get("Fn::Sub"), str):
        return re.sub(r"\$\{([^}]+)\}", lambda m: {**PSEUDO, "Stage": stage}.get(m[1], "*"), resource["Fn::Sub"])
    return "*"


def _iam_match(pattern: str, value: str) -> bool:
    return (
        re.fullmatch(".*".join(".".join(map(re.escape, part.split("?"))) for part in pattern.split("*")), value)
        is not None
    )


def readable_secret_patterns(translated: dict[str, Any], function: str, stage: str) -> list[str]:
    """The secret ARN patterns a function's role may call GetSecretValue on."""
    role = translated["Resources"][f"{function}Role"]["Properties"]
    assert not any("SecretsManager" in arn or "Administrator" in arn for arn in role.get("ManagedPolicyArns", []))
    patterns = []
    for policy in role.get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            for branch in _branches(statement):
                assert "NotAction" not in branch and "NotResource" not in branch
                actions = branch["Action"] if isinstance(branch["Action"], list) else [branch["Action"]]
                if branch["Effect"] != "Allow" or not any(
                    fnmatchcase("secretsmanager:GetSecretValue".lower(), action.lower()) for action in actions
                ):
                    continue
                resources = branch["Resource"] if isinstance(branch["Resource"], list) else [branch["Resource"]]
                patterns.extend(_resource_pattern(resource, stage) for resource in resources)
    return patterns


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return translated_template()


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_webhook_function_cannot_read_provider_credentials(translated: dict[str, Any], stage: str) -> None:
    patterns = readable_secret_patterns(translated, "WebhookFunction", stage)

    assert any(_iam_match(p, SECRET_ARN.format(stage=stage, kind="webhook")) for p in patterns)
    assert not any(_iam_match(p, SECRET_ARN.format(stage=stage, kind="sources")) for p in patterns), patterns


@pytest.mark.parametrize("function", ["FetcherFunction", "PbxSessionKeeperFunction", "ReconcilerFunction"])
def test_the_functions_that_call_providers_read_the_whole_sources(translated: dict[str, Any], function: str) -> None:
    patterns = readable_secret_patterns(translated, function, "prod")

    assert any(_iam_match(p, SECRET_ARN.format(stage="prod", kind="sources")) for p in patterns)


def test_the_template_and_the_register_command_agree_on_the_secret_names() -> None:
    variables = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["SOURCES_SECRET_PREFIX"] == {"Fn::Sub": secret_prefix("${Stage}")}
    assert variables["WEBHOOK_SECRET_PREFIX"] == {"Fn::Sub": webhook_secret_prefix("${Stage}")}


def test_registering_with_the_stacks_key_encrypts_both_copies_new_and_existing(aws: None, tmp_path: Path) -> None:
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(yaml.safe_dump({"sources": [DOCUMENTS["dypls"]]}))
    assert register_main(["--stage", "prod", str(sources_file)]) == 0  # first without a key
    key = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]

    assert register_main(["--stage", "prod", "--kms-key-id", key, str(sources_file)]) == 0

    secrets = boto3.client("secretsmanager")
    for kind in ("sources", "webhook"):
        assert secrets.describe_secret(SecretId=f"callvault/prod/{kind}/privacy-pool")["KmsKeyId"] == key
