"""Register sources in AWS: ``python -m callvault.register --stage prod sources.yaml``.

Each source of the file becomes (or updates) two Secrets Manager secrets that the functions
read: ``callvault/{stage}/sources/{id}`` (the whole source) and ``callvault/{stage}/webhook/{id}``
(the webhook's copy, without the provider credentials). The file is validated first, as a
whole: nothing is written if any source is malformed, or if a source points the functions at a
loopback address (the local sample file, ``local/sources.yaml``, does: its tokens are public).
With ``--kms-key-id`` (the stack's ``KmsKeyArn``), both secrets are encrypted with that key.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from callvault.errors import ConfigError
from callvault.sources_file import load_sources_file, publish_sources


def secret_prefix(stage: str) -> str:
    """The template's SOURCES_SECRET_PREFIX for a stage."""
    return f"callvault/{stage}/sources/"


def webhook_secret_prefix(stage: str) -> str:
    """The template's WEBHOOK_SECRET_PREFIX for a stage."""
    return f"callvault/{stage}/webhook/"


def refuse_loopback_addresses(raws: Sequence[Mapping[str, Any]]) -> None:
    """A provider address on loopback is never right in AWS: the function would call itself (and
    its runtime API listens there). It is what the local sample file has, so say so."""
    for raw in raws:
        provider = str(raw["provider"])
        for field, value in _strings(raw.get(provider), provider):
            if _is_loopback(value):
                raise ConfigError(
                    f"source {raw['id']!r}: {field} {value!r} is a loopback address, which in AWS is the"
                    " function itself, not a provider (is this the local sample file?)"
                )


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value, path)


def _is_loopback(value: str) -> bool:
    text = value.strip()
    host = (urlsplit(text).hostname or "") if "://" in text else text.strip("[]")
    host = host.lower().lstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m callvault.register", description=__doc__.splitlines()[0])
    parser.add_argument("sources_file", help="YAML file with a top-level 'sources:' list")
    parser.add_argument("--stage", default="dev", help="stack stage (template parameter Stage); default dev")
    parser.add_argument(
        "--kms-key-id",
        default="",
        help="the stack's KmsKeyArn: encrypt the secrets with it (default: the account's aws/secretsmanager key)",
    )
    args = parser.parse_args(argv)
    import boto3

    try:
        raws = load_sources_file(args.sources_file)
        refuse_loopback_addresses(raws)
        ids = publish_sources(
            raws,
            boto3.client("secretsmanager"),
            secret_prefix(args.stage),
            webhook_secret_prefix(args.stage),
            kms_key_id=args.kms_key_id or None,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for source_id in ids:
        print(f"registered {secret_prefix(args.stage)}{source_id} and {webhook_secret_prefix(args.stage)}{source_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
