"""The sources file: a YAML ``sources:`` list, the format of ``local/sources.yaml`` and of
``make register-sources``. Read only by operators' tools and the local stack, never in Lambda
(a function reads one source's JSON secret: no YAML parser on its cold start)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from callvault.errors import ConfigError
from callvault.sources import parse_source, webhook_document


def load_sources_file(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a sources YAML file; returns the raw documents, in file order."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sources file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"sources file {path} is not valid YAML: {exc}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("sources"), list):
        raise ConfigError(f"sources file {path}: expected a top-level 'sources:' list")
    seen: set[str] = set()
    raws: list[dict[str, Any]] = []
    for index, raw in enumerate(document["sources"]):
        source = parse_source(raw, where=f"{path}: sources[{index}]")
        if source.id in seen:
            raise ConfigError(f"{path}: source id {source.id!r} appears twice")
        seen.add(source.id)
        raws.append(dict(raw))
    return raws


def publish_sources(
    raws: Sequence[Mapping[str, Any]],
    secrets_client: Any,
    sources_prefix: str,
    webhook_prefix: str,
    *,
    kms_key_id: str | None = None,
) -> list[str]:
    """Create or update both secrets of each (validated) source: the whole document under
    ``sources_prefix``, the webhook's copy under ``webhook_prefix``; returns the source ids.

    ``kms_key_id`` (the stack's ``KmsKeyArn``) encrypts both with the customer's key instead of
    the account's default ``aws/secretsmanager`` key, existing secrets included.
    """
    published = []
    for raw in raws:
        # The whole document first: should the webhook's copy then fail, pushes are refused (and
        # reconciliation finds their calls) instead of being accepted for a source nobody can fetch.
        _put_secret(secrets_client, f"{sources_prefix}{raw['id']}", raw, kms_key_id)
        _put_secret(secrets_client, f"{webhook_prefix}{raw['id']}", webhook_document(raw), kms_key_id)
        published.append(str(raw["id"]))
    return published


def publish_sources_file(path: str | Path, secrets_client: Any, sources_prefix: str, webhook_prefix: str) -> list[str]:
    """Validate a sources file as a whole, then publish each source (``publish_sources``)."""
    return publish_sources(load_sources_file(path), secrets_client, sources_prefix, webhook_prefix)


def _put_secret(secrets_client: Any, name: str, document: Mapping[str, Any], kms_key_id: str | None) -> None:
    secret = json.dumps(document, ensure_ascii=False)
    key = {"KmsKeyId": kms_key_id} if kms_key_id else {}
    try:
        secrets_client.create_secret(Name=name, SecretString=secret, Description="callvault source", **key)
    except secrets_client.exceptions.ResourceExistsException:
        # A new version of the value, and the key if one is given (re-encrypting from then on).
        secrets_client.update_secret(SecretId=name, SecretString=secret, **key)
