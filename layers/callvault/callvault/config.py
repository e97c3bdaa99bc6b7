"""Function settings, read once from the environment and validated at the edge.

Every function of the stack gets the same variables (template Globals), so one typed
record serves all of them; code never reads ``os.environ`` anywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from callvault.errors import ConfigError


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 8
    base_delay_seconds: int = 60
    max_delay_seconds: int = 3600


@dataclass(frozen=True)
class Settings:
    stage: str
    recordings_bucket: str
    ledger_table: str
    fetch_queue_url: str
    retry_state_machine_arn: str
    sources_secret_prefix: str
    # The webhook's copies of the sources (no provider credentials); the only ones it may read.
    webhook_secret_prefix: str
    retry: RetrySettings
    # Only the fetcher and the session keeper get it (the webhook function cannot name its
    # own API in the template without a cycle); they read it through public_webhook_base_url.
    webhook_base_url: str = ""
    # Only the reconciler uses it (it fans scheduled runs out through this queue).
    reconcile_queue_url: str = ""

    def reconcile_queue(self) -> str:
        if not self.reconcile_queue_url:
            raise ConfigError("environment variable RECONCILE_QUEUE_URL is not set")
        return self.reconcile_queue_url

    def public_webhook_base_url(self) -> str:
        if not self.webhook_base_url:
            raise ConfigError("environment variable WEBHOOK_BASE_URL is not set")
        return self.webhook_base_url

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ConfigError(f"environment variable {name} is not set")
            return value

        def positive_int(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from None
            if value < 1:
                raise ConfigError(f"environment variable {name} must be at least 1, got {value}")
            return value

        retry = RetrySettings(
            max_attempts=positive_int("RETRY_MAX_ATTEMPTS", RetrySettings.max_attempts),
            base_delay_seconds=positive_int("RETRY_BASE_DELAY_SECONDS", RetrySettings.base_delay_seconds),
            max_delay_seconds=positive_int("RETRY_MAX_DELAY_SECONDS", RetrySettings.max_delay_seconds),
        )
        if retry.max_delay_seconds < retry.base_delay_seconds:
            raise ConfigError("RETRY_MAX_DELAY_SECONDS must not be below RETRY_BASE_DELAY_SECONDS")
        return cls(
            stage=env.get("STAGE", "dev"),
            recordings_bucket=required("RECORDINGS_BUCKET"),
            ledger_table=required("LEDGER_TABLE"),
            fetch_queue_url=required("FETCH_QUEUE_URL"),
            retry_state_machine_arn=required("RETRY_STATE_MACHINE_ARN"),
            sources_secret_prefix=required("SOURCES_SECRET_PREFIX"),
            webhook_secret_prefix=required("WEBHOOK_SECRET_PREFIX"),
            retry=retry,
            webhook_base_url=env.get("WEBHOOK_BASE_URL", "").strip().rstrip("/"),
            reconcile_queue_url=env.get("RECONCILE_QUEUE_URL", "").strip(),
        )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings of this process, parsed on first use (cold start) and then reused."""
    return Settings.from_env(os.environ)
