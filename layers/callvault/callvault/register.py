"""Register sources in AWS: ``python -m callvault.register --stage prod sources.yaml``.

Each source of the file becomes (or updates) the Secrets Manager secret
``callvault/{stage}/sources/{id}`` that the functions read. The file is validated first,
as a whole: nothing is written if any source is malformed.
"""

from __future__ import annotations

import argparse
import sys

from callvault.errors import ConfigError
from callvault.sources_file import publish_sources_file


def secret_prefix(stage: str) -> str:
    """The template's SOURCES_SECRET_PREFIX for a stage."""
    return f"callvault/{stage}/sources/"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m callvault.register", description=__doc__.splitlines()[0])
    parser.add_argument("sources_file", help="YAML file with a top-level 'sources:' list")
    parser.add_argument("--stage", default="dev", help="stack stage (template parameter Stage); default dev")
    args = parser.parse_args(argv)
    import boto3

    try:
        ids = publish_sources_file(args.sources_file, boto3.client("secretsmanager"), secret_prefix(args.stage))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for source_id in ids:
        print(f"registered {secret_prefix(args.stage)}{source_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
