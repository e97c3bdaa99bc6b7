"""callvault's side of the transfer benchmark: the real ``Fetcher``, built as the fetcher function builds it.

A job of a Dypls pool (``bench.dypls_pool``) goes through ``Fetcher.process`` exactly as in
Lambda: the ledger claim (DynamoDB), the source from Secrets Manager, the download link from the
pool's RPC API (the Dypls simulator), the SSRF check, the streamed download from the file server
into S3 (moto), the ledger record. Two things are added around it, neither in the path:

- the provider is observed (``ObservedProvider``): every download it hands the Fetcher is the
  provider's own, timed from the moment it is first opened to the moment the last one is closed
  (after the upload finished). That window, the transfer, is what the peers are compared on;
  the whole job (claim, link, transfer, record) is timed as well;
- the retry workflow is a stand-in (``RetryAtOnce``): a broken transfer is handed over to it as
  always, and it gives the next attempt straight back instead of waiting its backoff in Step
  Functions and re-enqueuing, so the attempts after a break are timed in the same process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from functools import partial
from typing import Any

import boto3

from callvault.config import RetrySettings
from callvault.fetching import Fetcher
from callvault.http import HttpClients
from callvault.jobs import RetryWorkflow
from callvault.ledger import RecordingLedger, lease_seconds_for
from callvault.models import FetchJob
from callvault.provider_state import ProviderState
from callvault.providers.interface import (
    InboundRequest,
    PendingDownload,
    Provider,
    ProviderRuntime,
    Source,
    WebhookReply,
)
from callvault.retry_policy import RetryPlan
from callvault.sources import SourceDirectory

Item = dict[str, Any]
# A Lambda invocation's worth of time (the fetcher's timeout is 300 s; leases outlive it).
LEASE_SECONDS = lease_seconds_for(300_000)
MAX_ATTEMPTS = 4
# Dypls sources never log in to their provider, so nothing reads the webhook base URL.
UNUSED_WEBHOOK_BASE_URL = "http://127.0.0.1:9/unused"


class TransferClock:
    """Wall and CPU time (this process, all threads) at a transfer's first open and last close."""

    def __init__(self) -> None:
        self.opened: tuple[float, float] | None = None
        self.closed: tuple[float, float] | None = None

    @contextmanager
    def measured(
        self, open_download: Callable[..., AbstractContextManager[Any]], *args: Any, **kwargs: Any
    ) -> Iterator[Any]:
        if self.opened is None:
            self.opened = (time.perf_counter(), time.process_time())
        try:
            with open_download(*args, **kwargs) as stream:
                yield stream
        finally:
            self.closed = (time.perf_counter(), time.process_time())

    def window(self) -> dict[str, float]:
        if self.opened is None or self.closed is None:
            raise RuntimeError("the Fetcher never opened a download")
        return {"seconds": self.closed[0] - self.opened[0], "cpu_seconds": self.closed[1] - self.opened[1]}


class ObservedProvider:
    """A provider exactly as it is, except that the downloads it resolves are timed by ``clock``."""

    def __init__(self, provider: Provider, clock: TransferClock) -> None:
        self._provider = provider
        self._clock = clock
        self.name = provider.name
        self.reconcile_defaults = provider.reconcile_defaults
        self.default_max_concurrent_fetches = provider.default_max_concurrent_fetches
        self.credential_fields = provider.credential_fields

    def parse_settings(self, raw: Mapping[str, Any], *, where: str, credentials: bool = True) -> Any:
        return self._provider.parse_settings(raw, where=where, credentials=credentials)

    def parse_webhook(self, source: Source, request: InboundRequest) -> WebhookReply:
        return self._provider.parse_webhook(source, request)

    def resolve(self, source: Source, job: FetchJob, runtime: ProviderRuntime) -> list[PendingDownload]:
        downloads = self._provider.resolve(source, job, runtime)
        return [replace(download, open=partial(self._clock.measured, download.open)) for download in downloads]


class ObservedSources(SourceDirectory):
    """The sources from Secrets Manager, each with its provider observed."""

    def __init__(self, secrets_client: Any, prefix: str, clock: TransferClock) -> None:
        super().__init__(secrets_client, prefix)
        self._clock = clock

    def get(self, source_id: str) -> Source:
        source = super().get(source_id)
        return replace(source, provider=ObservedProvider(source.provider, self._clock))


class RetryAtOnce(RetryWorkflow):
    """The retry workflow without its wait: the next attempt of a job comes straight back."""

    def __init__(self) -> None:
        super().__init__(open_sfn=lambda: None, state_machine_arn="")
        self.next_attempt: FetchJob | None = None

    def hand_over(
        self,
        job: FetchJob,
        plan: RetryPlan,
        ledger_key: dict[str, str],
        delivery_id: str,
        failed_event: dict[str, Any] | None = None,
    ) -> str:
        self.next_attempt = None if plan.give_up else job.next_attempt()
        return ""


def fetcher_copy(task: Item) -> Callable[[Item], Item]:
    """A copy function for ``bench.transfer_peers``: each item carries one job (``item["job"]``).
    It reports the transfer window as ``seconds`` and ``cpu_seconds``."""
    table = boto3.resource("dynamodb").Table(task["ledger_table"])
    workflow = RetryAtOnce()
    clock = TransferClock()
    fetcher = Fetcher(
        sources=ObservedSources(boto3.client("secretsmanager"), task["secret_prefix"], clock),
        ledger=RecordingLedger(table),
        s3=boto3.client("s3"),
        bucket=task["bucket"],
        runtime=ProviderRuntime(
            http=HttpClients(), state=ProviderState(table), webhook_base_url=UNUSED_WEBHOOK_BASE_URL
        ),
        workflow=workflow,
        retry=RetrySettings(),
    )

    def copy(item: Item) -> Item:
        job = FetchJob.from_json(item["job"])
        clock.opened = clock.closed = None
        reasons: list[str] = []
        for attempt in range(1, MAX_ATTEMPTS + 1):
            workflow.next_attempt = None
            report = fetcher.process(job, LEASE_SECONDS, delivery_id=f"bench-{job.call_id}-{attempt}")
            if report.stored:
                stored = report.stored[0]
                return {
                    **clock.window(),
                    "key": stored.key,
                    "size": stored.size,
                    "sha256": stored.sha256,
                    "attempts": attempt,
                    "retry_reasons": reasons,
                }
            if report.handed_over is None or workflow.next_attempt is None:
                raise RuntimeError(f"job not archived on attempt {attempt}: {report}")
            reasons.append(report.handed_over)
            job = workflow.next_attempt
        raise RuntimeError(f"job not archived in {MAX_ATTEMPTS} attempts: {reasons}")

    return copy
