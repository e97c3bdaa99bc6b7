"""Where jobs go: the fetch queue, and the retry workflow that brings them back."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

from callvault.models import FetchJob
from callvault.observability import without_phone_numbers
from callvault.retry_policy import RetryPlan

SQS_BATCH = 10


class JobQueue:
    """Enqueues fetch jobs on the SQS fetch queue; raises if any message was not accepted.

    Every job carries its source as its ``MessageGroupId``: the fetch queue is an SQS fair queue,
    which keeps a quiet source's jobs from waiting behind another source's backlog.
    """

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url

    def enqueue(self, jobs: Sequence[FetchJob], delay_seconds: int = 0) -> None:
        """Send ``jobs``, each visible after ``delay_seconds`` (at most SQS's 900)."""
        delay = {"DelaySeconds": min(900, delay_seconds)} if delay_seconds > 0 else {}
        for start in range(0, len(jobs), SQS_BATCH):
            batch = jobs[start : start + SQS_BATCH]
            reply = self._sqs.send_message_batch(
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(i), "MessageBody": job.to_json(), "MessageGroupId": job.source_id, **delay}
                    for i, job in enumerate(batch)
                ],
            )
            failed = reply.get("Failed") or []
            if failed:
                reasons = "; ".join(f"{f.get('Code')}: {f.get('Message')}" for f in failed)
                raise RuntimeError(f"fetch queue refused {len(failed)} of {len(batch)} jobs ({reasons})")


class RetryWorkflow:
    """Starts the retry state machine for a job that could not be archived on this attempt."""

    def __init__(self, open_sfn: Callable[[], Any], state_machine_arn: str) -> None:
        # The Step Functions client is made at the first retry: most fetches need none, and
        # every client made at a cold start costs time before the first download begins.
        self._open_sfn = open_sfn
        self._arn = state_machine_arn

    @cached_property
    def _sfn(self) -> Any:
        return self._open_sfn()

    def hand_over(
        self,
        job: FetchJob,
        plan: RetryPlan,
        ledger_key: dict[str, str],
        delivery_id: str,
        failed_event: dict[str, Any] | None = None,
    ) -> str:
        """``failed_event``: what the ``RecordingFailed`` event says of the call, if the
        workflow gives up (callvault.announcements)."""
        document = {
            "job": job.next_attempt().to_dict(),
            "retry": {
                "give_up": plan.give_up,
                "wait_seconds": plan.wait_seconds,
                "attempt": job.attempt,
                "reason": plan.reason,
                # What the operators' alert says (the workflow never sends the job itself).
                "alert_reason": without_phone_numbers(plan.reason),
                "error": plan.error,
                "ledger_key": {name: {"S": value} for name, value in ledger_key.items()},
                "event": failed_event or {},
            },
        }
        try:
            return str(
                self._sfn.start_execution(
                    stateMachineArn=self._arn,
                    name=execution_name(job, plan, delivery_id),
                    input=json.dumps(document, ensure_ascii=False),
                )["executionArn"]
            )
        except self._sfn.exceptions.ExecutionAlreadyExists:
            return ""  # a redelivered message already handed this attempt over


def execution_name(job: FetchJob, plan: RetryPlan, delivery_id: str) -> str:
    """Deterministic per delivery: a redelivered message cannot schedule a second retry, while a
    new report of the same call (a new message) still gets its own workflow."""
    digest = hashlib.sha256(f"{job.identity}\n{delivery_id}".encode()).hexdigest()[:40]
    return f"{'giveup' if plan.give_up else 'retry'}-{job.attempt}-{digest}"
