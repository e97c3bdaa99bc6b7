"""The error vocabulary shared by webhook, fetcher and providers.

Two families: ``RequestRejected`` is what the webhook answers with a 4xx (nothing is
enqueued), ``FetchError`` is what a fetch attempt ends with and decides whether the job
is retried later or fails for good.
"""

from __future__ import annotations

from enum import Enum


class ConfigError(ValueError):
    """Configuration (environment, sources file, secret) is missing or malformed."""


class RequestRejected(Exception):
    """A webhook request that is answered with a 4xx status and enqueues nothing."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(RequestRejected):
    status_code = 400


class Unauthorized(RequestRejected):
    status_code = 401


class Forbidden(RequestRejected):
    status_code = 403


class SourceNotFound(RequestRejected):
    status_code = 404


class Conflict(RequestRejected):
    """The request repeats one already received (a replayed signed delivery)."""

    status_code = 409


class PayloadTooLarge(RequestRejected):
    status_code = 413


class UnsupportedMediaType(RequestRejected):
    status_code = 415


class RetryKind(str, Enum):
    """Why a fetch should be tried again later; each kind has its own backoff."""

    LINK_EXPIRED = "LinkExpired"
    NOT_READY = "RecordingNotReady"
    THROTTLED = "Throttled"
    PROVIDER_UNAVAILABLE = "ProviderUnavailable"
    TRANSFER_FAILED = "TransferFailed"
    STORAGE_UNAVAILABLE = "StorageUnavailable"  # S3 refused or could not be reached


class FetchError(Exception):
    """Base of everything a fetch attempt can end with, short of success."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryLater(FetchError):
    """Transient: the retry workflow waits and hands the job back to the fetcher."""

    def __init__(self, kind: RetryKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


class PermanentFailure(FetchError):
    """Retrying cannot help (bad credentials, unknown recording, retention passed)."""
