"""What leaves a process for operators: logs, traces, metrics and alert text; each made one way here.

- ``logger``: Powertools structured JSON logs, one per process.
- ``tracer``: Powertools Tracer (X-Ray) for the handlers. It patches boto3 only: ``requests``
  fetches the providers' download links, which are bearer credentials and must not land in a
  trace. Off outside Lambda (tests, the operator's command) and in the local stack (no X-Ray).
- ``publish_metrics``: CloudWatch metrics as EMF log lines (namespace ``callvault``), and the
  fetcher's metrics on it: files and bytes archived and the call-end-to-archive delay per
  provider; retries and recordings given up on per provider and reason. Dimensions stay few:
  ``reason`` is a code from a fixed set, never the free-text reason; the source id goes along as
  metadata (searchable in the log, not a dimension), but for the fair-sharing metrics, whose
  point is which source waits (three metrics per source: ``SourceFetchesInFlight``,
  ``SourceWaitSeconds``, ``FetchesDeferred``; each is a custom metric CloudWatch bills).
- ``without_phone_numbers``: the free-text reason as an alert may carry it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from callvault.errors import RetryKind

SERVICE = "callvault"
METRICS_NAMESPACE = "callvault"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE, patch_modules=["boto3"])

# Why a fetch was retried or given up on, as a metric dimension: the retry plan's error.
PERMANENT_FAILURE = "PermanentFailure"
REASON_CODES = frozenset({kind.value for kind in RetryKind} | {PERMANENT_FAILURE})
OTHER_REASON = "Other"

# Seven or more digits in a row: a phone number (or something as long, masked all the same).
# Shorter runs stay: PBX error numbers (10023), HTTP statuses, extensions.
_PHONE_NUMBER = re.compile(r"\+?\d{7,}")


def without_phone_numbers(text: str) -> str:
    """``text`` with every run of seven or more digits masked, for alerts (e-mail, chat, pager)."""
    return _PHONE_NUMBER.sub("#######", text)


def reason_code(error: str) -> str:
    """The metric dimension for a retry plan's error: one of ``REASON_CODES``, else ``Other``."""
    return error if error in REASON_CODES else OTHER_REASON


def publish_metrics(
    values: Mapping[str, tuple[MetricUnit, float]],
    dimensions: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write one EMF document: ``values`` (name → unit, value) under ``dimensions`` (plus ``service``).

    Ephemeral, one document per call: a process-wide ``Metrics`` would carry one call's dimensions
    into the next. A metric that cannot be written is logged, never raised: it must not cost an
    archived recording a redelivery.
    """
    try:
        metrics = EphemeralMetrics(service=SERVICE, namespace=METRICS_NAMESPACE)
        for name, (unit, amount) in values.items():
            metrics.add_metric(name=name, unit=unit, value=amount)
        for dimension, value in (dimensions or {}).items():
            metrics.add_dimension(name=dimension, value=value)
        for key, note in (metadata or {}).items():
            metrics.add_metadata(key=key, value=note)
        metrics.flush_metrics()
    except Exception as exc:
        logger.warning("metrics not published", extra={"metrics": sorted(values), "error": str(exc)})


def record_archived(*, provider: str, source_id: str, size: int, delay_seconds: float) -> None:
    """One recording file archived: ``RecordingsArchived``, ``BytesArchived``, ``ArchiveDelay``."""
    publish_metrics(
        {
            "RecordingsArchived": (MetricUnit.Count, 1),
            "BytesArchived": (MetricUnit.Bytes, size),
            # A provider clock ahead of ours must not make a negative delay.
            "ArchiveDelay": (MetricUnit.Seconds, max(0.0, delay_seconds)),
        },
        {"provider": provider},
        {"source_id": source_id},
    )


def record_retry(*, provider: str, source_id: str, error: str) -> None:
    """A fetch attempt failed and the retry workflow will try again: ``FetchRetries``."""
    publish_metrics({"FetchRetries": (MetricUnit.Count, 1)}, _why(provider, error), {"source_id": source_id})


def record_failure(*, provider: str, source_id: str, error: str) -> None:
    """A recording was given up on (it ends FAILED): ``RecordingFailures``."""
    publish_metrics({"RecordingFailures": (MetricUnit.Count, 1)}, _why(provider, error), {"source_id": source_id})


def record_fetch_started(*, provider: str, source_id: str, in_flight: int) -> None:
    """A fetch took one of its source's slots: ``SourceFetchesInFlight`` (its maximum over a
    period is how busy the source was)."""
    publish_metrics({"SourceFetchesInFlight": (MetricUnit.Count, in_flight)}, {"source_id": source_id})


def record_deferral(*, provider: str, source_id: str, waited_seconds: float, in_flight: int) -> None:
    """A job found its source's slots all taken and went back to the queue: ``FetchesDeferred``
    per provider and per source (how many jobs waited), ``SourceWaitSeconds`` (how long this one
    has waited for a slot) per source and over all sources, which ``SourceBacklogAlarm`` watches."""
    publish_metrics({"FetchesDeferred": (MetricUnit.Count, 1)}, {"provider": provider}, {"source_id": source_id})
    waited = {"SourceWaitSeconds": (MetricUnit.Seconds, max(0.0, waited_seconds))}
    publish_metrics(waited, None, {"source_id": source_id})
    publish_metrics(
        {**waited, "FetchesDeferred": (MetricUnit.Count, 1), "SourceFetchesInFlight": (MetricUnit.Count, in_flight)},
        {"source_id": source_id},
    )


def _why(provider: str, error: str) -> dict[str, str]:
    return {"provider": provider, "reason": reason_code(error)}
