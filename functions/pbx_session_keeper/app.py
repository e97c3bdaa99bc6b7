"""PBX session keeper (scheduled): keep each PBX API token alive so the PBX keeps pushing reports."""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext

from callvault.config import settings
from callvault.http import HttpClients
from callvault.observability import logger
from callvault.provider_state import ProviderState
from callvault.providers import ProviderRuntime
from callvault.session_keeper import keep_pbx_sessions
from callvault.sources import SourceDirectory


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    config = settings()
    table = boto3.resource("dynamodb").Table(config.ledger_table)
    sources = SourceDirectory(boto3.client("secretsmanager"), config.sources_secret_prefix)
    runtime = ProviderRuntime(http=HttpClients(), state=ProviderState(table), webhook_base_url=config.webhook_base_url)
    return keep_pbx_sessions(sources, runtime)
