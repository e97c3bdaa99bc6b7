"""The downstream contract as consumers see it: the JSON Schemas under ``schemas/`` and a tap on
the stack's event bus that collects what a consumer would receive.

``python -m local.demo`` validates every event it receives and every sidecar it finds with
``problems``; tests do the same (tests/integration/test_consumer_contract.py).
"""

from __future__ import annotations

import json
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
SCHEMA_OF = {
    "RecordingArchived": "recording-archived.v1.json",
    "RecordingFailed": "recording-failed.v1.json",
    "call.json": "call.v1.json",
}


@cache
def _validator(kind: str) -> Draft202012Validator:
    documents = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in SCHEMAS.glob("*.json")}
    registry: Registry = Registry().with_resources(
        (name, Resource.from_contents(document)) for name, document in documents.items()
    )
    schema = documents[SCHEMA_OF[kind]]
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def problems(kind: str, document: Any) -> list[str]:
    """What in ``document`` breaks the schema of ``kind`` (an event's detail-type, or call.json)."""
    if kind not in SCHEMA_OF:
        return [f"no schema for {kind!r}"]
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '(top)'}: {error.message}"
        for error in _validator(kind).iter_errors(document)
    ]


class EventTap:
    """A consumer's subscription, made the way any consumer makes one: a rule on the bus for
    ``source: callvault`` whose target is a queue of its own; ``drain`` returns the events."""

    def __init__(self, events: Any, sqs: Any, bus: str) -> None:
        self._events = events
        self._sqs = sqs
        name = f"callvault-consumer-tap-{uuid.uuid4().hex[:8]}"
        self._queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps({"source": ["callvault"]}))
        events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "tap", "Arn": arn}])

    def drain(self) -> list[dict[str, Any]]:
        """Every event received so far (each message deleted once read)."""
        received: list[dict[str, Any]] = []
        while True:
            reply = self._sqs.receive_message(QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = reply.get("Messages", [])
            if not messages:
                return received
            for message in messages:
                received.append(json.loads(message["Body"]))
                self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
