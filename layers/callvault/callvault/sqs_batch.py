"""An SQS batch handled message by message, answered as a partial batch response.

The fetcher and the reconciler consume SQS with ``ReportBatchItemFailures``: a message whose
handling raised is named in ``batchItemFailures`` and comes back after its visibility timeout
(and, after ``maxReceiveCount`` receipts, goes to the dead-letter queue); the others are deleted.
When every message of a batch failed, the invocation fails (``BatchFailed``), as with
Powertools' ``BatchProcessor``: Lambda retries the batch all the same, and the function's
``Errors`` metric (and its alarm) sees a consumer that fails everything it is given. This is all
that ``BatchProcessor`` does for a plain queue; importing it (with its event data classes) cost
the fetcher's every cold start more than anything else of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from callvault.observability import logger

BatchResponse = dict[str, list[dict[str, str]]]


class BatchFailed(Exception):
    """Every message of the batch failed; the first one's error is the cause."""


@dataclass(frozen=True)
class QueueMessage:
    """What the handlers read of one SQS record."""

    message_id: str
    body: str


def handle_batch(event: Mapping[str, Any], handle: Callable[[QueueMessage], None]) -> BatchResponse:
    """Run ``handle`` on every record of an SQS event; name the ones that raised.

    Every record gets its turn whatever the others did. A record without a message id cannot be
    named, so it fails the whole batch, as Lambda treats an unusable response.
    """
    failures: list[dict[str, str]] = []
    first_error: Exception | None = None
    records = event.get("Records") or []
    for record in records:
        message_id = record.get("messageId") if isinstance(record, Mapping) else None
        if not isinstance(message_id, str) or not message_id:
            raise ValueError(f"an SQS record without a messageId: {str(record)[:200]}")
        try:
            body = record.get("body")
            if not isinstance(body, str):
                raise ValueError("the SQS record has no text body")
            handle(QueueMessage(message_id=message_id, body=body))
        except Exception as exc:
            # Logged with its traceback; the message comes back, and parks in the DLQ in the end.
            logger.exception("message failed; it will be redelivered", extra={"message_id": message_id})
            failures.append({"itemIdentifier": message_id})
            first_error = first_error or exc
    if records and len(failures) == len(records):
        raise BatchFailed(f"all {len(records)} message(s) failed; the first: {first_error}") from first_error
    return {"batchItemFailures": failures}
