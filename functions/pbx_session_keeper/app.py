"""Session keeper (scheduled): keep each PBX API token alive so the PBX keeps pushing reports."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext

from callvault.config import settings
from callvault.http import HttpClients
from callvault.observability import logger, tracer
from callvault.provider_state import ProviderState
from callvault.providers.interface import ProviderRuntime
from callvault.sessions import DEADLINE_MARGIN_SECONDS, keep_sessions
from callvault.sources import SourceDirectory


@lru_cache(maxsize=1)
def _dependencies() -> tuple[SourceDirectory, ProviderRuntime]:
    config = settings()
    table = boto3.resource("dynamodb").Table(config.ledger_table)
    return (
        SourceDirectory(boto3.client("secretsmanager"), config.sources_secret_prefix),
        ProviderRuntime(
            http=HttpClients(), state=ProviderState(table), webhook_base_url=config.public_webhook_base_url()
        ),
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    sources, runtime = _dependencies()
    # Every PBX is kept at once; the pass reports before the function's own timeout.
    return keep_sessions(
        sources,
        runtime,
        time_left=lambda: context.get_remaining_time_in_millis() / 1000 - DEADLINE_MARGIN_SECONDS,
    )
