"""Play the Lambda SQS event source mapping: long-poll a queue, invoke with batches, acknowledge.

Batch size, batching window and ``ReportBatchItemFailures`` apply as in Lambda; failed messages
are left to the queue's visibility timeout and redrive policy. The pollers of one mapping share
a ``FairBuffer``: messages of the message group with the fewest in flight go first, as Amazon SQS
fair queues favour quiet groups (docs/local.md says how closely).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from local.emulator.fair_dispatch import FairBuffer, hold_for
from local.emulator.function_runner import FunctionRunner

LOG = logging.getLogger("local.emulator.sqs_poller")

SQS_RECEIVE_MAX = 10


@dataclass(frozen=True)
class QueueMapping:
    """An SQS event source mapping, taken out of moto and polled here instead."""

    mapping_id: str
    function_id: str
    queue_arn: str
    queue_url: str
    batch_size: int = 10
    batching_window_seconds: float = 0.0
    report_batch_item_failures: bool = False


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One record of a Lambda SQS event, from a ReceiveMessage message."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": {
            name: _lambda_message_attribute(value) for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _lambda_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """SQS API attribute shape → the camel-cased shape Lambda puts in records."""
    converted: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues") or []),
        "binaryListValues": [base64.b64encode(item).decode() for item in value.get("BinaryListValues") or []],
        "dataType": value.get("DataType", "String"),
    }
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        converted["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return converted


def failed_message_ids(result: Any, batch_ids: list[str]) -> set[str]:
    """Which messages a ReportBatchItemFailures response marks failed, per Lambda's rules.

    None, ``{}`` and an empty/null ``batchItemFailures`` mean complete success; an identifier
    that is missing, empty or not in the batch makes the whole batch a failure.
    """
    if result is None:
        return set()
    if not isinstance(result, dict):
        LOG.warning("SQS handler returned %s, not a batch response: whole batch fails", type(result).__name__)
        return set(batch_ids)
    failures = result.get("batchItemFailures") or []
    failed: set[str] = set()
    for item in failures if isinstance(failures, list) else [failures]:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not identifier or identifier not in batch_ids:
            LOG.warning("invalid batchItemFailures entry %r: whole batch fails", item)
            return set(batch_ids)
        failed.add(identifier)
    return failed


class QueuePoller:
    """Long-polls one queue and invokes the mapped function, as the Lambda SQS poller does.

    Successful messages are deleted; failed ones are left for the queue's visibility timeout
    to redeliver (and its redrive policy to move to the DLQ — moto applies that on receive).
    """

    def __init__(
        self,
        mapping: QueueMapping,
        runner: FunctionRunner,
        sqs: Any,
        region: str,
        redelivery_delay: int | None = None,
        wait_seconds: int = 1,
        buffer: FairBuffer | None = None,
    ) -> None:
        """``buffer``: shared with the mapping's other pollers (one of its own, receiving no
        more than a batch, if None)."""
        self.mapping = mapping
        self._runner = runner
        self._sqs = sqs
        self._region = region
        self._redelivery_delay = redelivery_delay
        self._wait_seconds = wait_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.buffer = buffer or FairBuffer(self._receive)

    def start(self) -> None:
        """Poll in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name=f"sqs-{self.mapping.mapping_id}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to finish after its current poll (at most ``wait_seconds``)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=self._wait_seconds + 30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                if self._stop.is_set():
                    return
                LOG.exception("poller %s failed; retrying", self.mapping.mapping_id)
                self._stop.wait(1.0)

    def poll_once(self) -> int:
        """Take one batch and process it; return the number of messages taken."""
        messages: list[dict[str, Any]] = []
        try:
            self._receive_batch(messages)
            if messages:
                self._process(messages)
        finally:
            self.buffer.done(messages)
        return len(messages)

    def give_back(self) -> None:
        """Make the messages still held in the buffer visible again (the stack is stopping)."""
        held = self.buffer.drain()
        for start in range(0, len(held), SQS_RECEIVE_MAX):
            chunk = held[start : start + SQS_RECEIVE_MAX]
            self._sqs.change_message_visibility_batch(
                QueueUrl=self.mapping.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(chunk)
                ],
            )

    def _receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        reply = self._sqs.receive_message(
            QueueUrl=self.mapping.queue_url,
            MaxNumberOfMessages=min(SQS_RECEIVE_MAX, count),
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = reply.get("Messages", [])
        return messages

    def _receive_batch(self, batch: list[dict[str, Any]]) -> None:
        """Long-poll for a first message, then fill ``batch`` up to BatchSize/batching window
        (filled in place: what was taken is the caller's to finish, even if a later take fails)."""
        batch += self.buffer.take(self.mapping.batch_size, self._wait_seconds)
        deadline = time.monotonic() + self.mapping.batching_window_seconds
        while batch and len(batch) < self.mapping.batch_size and not self._stop.is_set():
            more = self.buffer.take(self.mapping.batch_size - len(batch), 0)
            if more:
                batch.extend(more)
            elif time.monotonic() >= deadline:
                break
            else:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _process(self, messages: list[dict[str, Any]]) -> None:
        """Invoke the function with the batch and acknowledge what succeeded."""
        records = [sqs_record(m, self.mapping.queue_arn, self._region) for m in messages]
        ids = [m["MessageId"] for m in messages]
        try:
            result = self._runner.invoke(self.mapping.function_id, {"Records": records})
        except Exception:
            failed = set(ids)  # traceback already logged by the runner; nothing is deleted
        else:
            failed = failed_message_ids(result, ids) if self.mapping.report_batch_item_failures else set()
        self._delete([m for m in messages if m["MessageId"] not in failed])
        if failed and self._redelivery_delay is not None:
            self._delay([m for m in messages if m["MessageId"] in failed])

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), SQS_RECEIVE_MAX):
            chunk = messages[start : start + SQS_RECEIVE_MAX]
            reply = self._sqs.delete_message_batch(
                QueueUrl=self.mapping.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            for failure in reply.get("Failed", []):
                LOG.warning("could not delete message from %s: %s", self.mapping.queue_url, failure)

    def _delay(self, messages: list[dict[str, Any]]) -> None:
        """Make failed messages visible again sooner than the queue's visibility timeout."""
        for start in range(0, len(messages), SQS_RECEIVE_MAX):
            chunk = messages[start : start + SQS_RECEIVE_MAX]
            self._sqs.change_message_visibility_batch(
                QueueUrl=self.mapping.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": self._redelivery_delay}
                    for i, m in enumerate(chunk)
                ],
            )


def start_pollers(
    mapping: QueueMapping,
    runner: FunctionRunner,
    new_client: Callable[[], Any],
    region: str,
    concurrency: int,
    redelivery_delay: int | None,
) -> list[QueuePoller]:
    """One poller per execution environment of the mapped function, sharing one buffer: the
    least busy message group first."""
    pollers: list[QueuePoller] = []
    sqs = new_client()
    visibility = float(
        sqs.get_queue_attributes(QueueUrl=mapping.queue_url, AttributeNames=["VisibilityTimeout"])["Attributes"][
            "VisibilityTimeout"
        ]
    )
    for _ in range(concurrency):
        poller = QueuePoller(mapping, runner, new_client(), region, redelivery_delay)
        if pollers:
            poller.buffer = pollers[0].buffer
        else:
            hold = hold_for(concurrency, mapping.batch_size, visibility)
            max_age = visibility / 2 if hold else float("inf")
            poller.buffer = FairBuffer(poller._receive, hold=hold, max_age_seconds=max_age)
        poller.start()
        pollers.append(poller)
    return pollers


def stop_pollers(pollers: list[QueuePoller]) -> None:
    """Stop them all, then give back the messages their buffers still hold."""
    for poller in pollers:
        poller.request_stop()  # all at once: each may sit in a 1 s long poll
    for poller in pollers:
        poller.stop()
    for poller in pollers:
        try:
            poller.give_back()  # a shared buffer is empty after its first poller gave it back
        except Exception:
            LOG.warning("could not give messages back to %s", poller.mapping.queue_url, exc_info=True)
