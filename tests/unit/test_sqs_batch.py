"""An SQS batch is answered message by message: only the messages that failed come back."""

from __future__ import annotations

import pytest

from callvault.sqs_batch import BatchFailed, QueueMessage, handle_batch


def sqs_event(*bodies: object) -> dict[str, object]:
    return {
        "Records": [{"messageId": f"m{n}", "body": body, "eventSource": "aws:sqs"} for n, body in enumerate(bodies)]
    }


def test_every_message_is_handled_and_a_clean_batch_names_no_failure() -> None:
    seen: list[QueueMessage] = []
    assert handle_batch(sqs_event("a", "b"), seen.append) == {"batchItemFailures": []}
    assert seen == [QueueMessage("m0", "a"), QueueMessage("m1", "b")]


def test_a_message_that_raises_is_named_logged_and_the_rest_still_run(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def handle(message: QueueMessage) -> None:
        if message.body == "bad":
            raise RuntimeError("the provider said no")
        seen.append(message.body)

    assert handle_batch(sqs_event("a", "bad", "c"), handle) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert seen == ["a", "c"]
    [logged] = caplog.records
    assert logged.levelname == "ERROR" and getattr(logged, "message_id", None) == "m1"
    assert logged.exc_info and "the provider said no" in str(logged.exc_info[1])


def test_a_batch_whose_every_message_failed_fails_the_invocation_so_the_errors_alarm_sees_it() -> None:
    def handle(message: QueueMessage) -> None:
        raise RuntimeError(f"AWS is down ({message.body})")

    with pytest.raises(BatchFailed, match=r"all 2 message\(s\) failed; the first: AWS is down \(a\)"):
        handle_batch(sqs_event("a", "b"), handle)


def test_a_record_without_a_text_body_fails_alone() -> None:
    assert handle_batch(sqs_event({"not": "text"}, "ok"), lambda message: None) == {
        "batchItemFailures": [{"itemIdentifier": "m0"}]
    }


def test_a_record_that_cannot_be_named_fails_the_whole_batch() -> None:
    with pytest.raises(ValueError, match="without a messageId"):
        handle_batch({"Records": [{"body": "x"}]}, lambda message: None)


def test_an_event_without_records_is_an_empty_success() -> None:
    assert handle_batch({}, lambda message: None) == {"batchItemFailures": []}
