"""The cold-start baseline: the least a Powertools function that calls AWS does.

Imports boto3 and Powertools' ``Logger``, creates the logger at import (as every handler does),
and on its first invocation (with the Lambda context injected into the logger) makes a Secrets
Manager client and reads one secret: the first thing three of the four handlers do.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger

logger = Logger(service="baseline")


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    secrets = boto3.client("secretsmanager")
    secret = secrets.get_secret_value(SecretId="callvault/bench/sources/baseline")
    return {"read": secret["Name"]}
