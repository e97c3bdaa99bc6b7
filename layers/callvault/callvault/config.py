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


MIB = 1024 * 1024


@dataclass(frozen=True)
class TransferSettings:
    """How a recording is streamed into S3 (``callvault.streaming``; the numbers are argued in
    docs/operations.md, "Transfer engine").

    Memory held for one transfer is at most ``memory_bound``: the parts the uploaders are sending
    and the ones queued for them, the part being filled and, while it is joined into one piece,
    its copy, and one read chunk, whatever the file size. S3 takes parts of 5 MiB at least (but
    the last); tests against in-memory fakes use smaller ones.
    """

    part_size: int = 8 * MIB
    uploaders: int = 3
    queued_parts: int = 1
    read_size: int = 1 * MIB
    # Resumes (or clean restarts) of a broken download within one attempt; beyond that the
    # attempt ends and the retry workflow waits, so a provider that always breaks is not looped on.
    max_resumes: int = 3
    # A resume needs a fresh request and the rest of the file: with less time left than this,
    # the attempt ends while there is still time to abort the upload cleanly.
    resume_needs_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.part_size < 1 or self.uploaders < 1 or self.queued_parts < 0 or self.max_resumes < 0:
            raise ConfigError(f"transfer settings out of range: {self}")
        if not 1 <= self.read_size <= self.part_size:
            raise ConfigError("transfer read_size must be between 1 byte and the part size")

    @property
    def memory_bound(self) -> int:
        """Bytes of part buffers and read chunk one transfer may hold at most."""
        return self.part_size * (self.uploaders + self.queued_parts + 2) + self.read_size


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
    transfer: TransferSettings = TransferSettings()
    # Only the fetcher and the session keeper get it (the webhook function cannot name its
    # own API in the template without a cycle); they read it through public_webhook_base_url.
    webhook_base_url: str = ""
    # Only the reconciler uses it (it fans scheduled runs out through this queue).
    reconcile_queue_url: str = ""
    # Where RecordingArchived / RecordingFailed go (callvault.announcements).
    event_bus_name: str = "default"
    # The longest a job waits in the queue for one of its source's fetch slots before it tries
    # again (callvault.fetch_slots); the local stack and tests shorten it.
    fetch_deferral_max_seconds: int = 300
    # Only the example transcription consumer: its calls' language (empty: Transcribe identifies it).
    transcription_language_code: str = ""

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
        part_size_mib = positive_int("TRANSFER_PART_SIZE_MIB", TransferSettings.part_size // MIB)
        if not 5 <= part_size_mib <= 64:
            # S3's smallest part is 5 MiB; beyond 64 MiB the part buffers outgrow the function's memory.
            raise ConfigError(f"TRANSFER_PART_SIZE_MIB must be from 5 to 64, got {part_size_mib}")
        return cls(
            stage=env.get("STAGE", "dev"),
            recordings_bucket=required("RECORDINGS_BUCKET"),
            ledger_table=required("LEDGER_TABLE"),
            fetch_queue_url=required("FETCH_QUEUE_URL"),
            retry_state_machine_arn=required("RETRY_STATE_MACHINE_ARN"),
            sources_secret_prefix=required("SOURCES_SECRET_PREFIX"),
            webhook_secret_prefix=required("WEBHOOK_SECRET_PREFIX"),
            retry=retry,
            transfer=TransferSettings(part_size=part_size_mib * MIB),
            webhook_base_url=env.get("WEBHOOK_BASE_URL", "").strip().rstrip("/"),
            reconcile_queue_url=env.get("RECONCILE_QUEUE_URL", "").strip(),
            event_bus_name=env.get("EVENT_BUS_NAME", "").strip() or "default",
            fetch_deferral_max_seconds=min(900, positive_int("FETCH_DEFERRAL_MAX_SECONDS", 300)),
            transcription_language_code=env.get("TRANSCRIPTION_LANGUAGE_CODE", "").strip(),
        )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings of this process, parsed on first use (cold start) and then reused."""
    return Settings.from_env(os.environ)
