"""Bad input: dead-lettered with a reason, never blocking the valid events of its batch."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterd.core.domain import Outcome
from meterd.runtime import Runtime
from meterd.testing import event

from .conftest import NOW
from .helpers import consumed, grant

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


#: What a Celery message can carry that no HTTP body could (issue 13): nesting past
#: the limit (or past any decoder), huge text, text that is not Unicode, NaN, objects
#: kombu's JSON revives from ``__type__``.
hostile = st.one_of(
    st.integers(min_value=15, max_value=3000).map(_nested),
    st.integers(min_value=60_000, max_value=70_000).map("x".__mul__),
    st.sampled_from(["\ud800", "a\udfff", "\x00", float("nan"), float("inf")]),
    st.builds(uuid.uuid4),
    st.decimals(allow_nan=False, places=2),
)
#: Quantities that Python's Decimal takes and the grammar refuses.
CONFUSABLE = ["\uff11", "\u0663", "1_000", " 2 ", "1e1", "+1", "0x10", "Infinity", "1."]

#: Malformed events of many kinds: garbage, and valid events with one field broken.
malformed = st.one_of(
    st.builds(
        lambda key, value: {**event(event_id="bad"), "data": {**event()["data"], key: value}},
        st.text(max_size=5),
        hostile,
    ),
    st.builds(
        lambda key, value: {**event(event_id="bad"), key: value}, st.text(max_size=5), hostile
    ),
    json_values.filter(lambda v: not isinstance(v, dict)),
    st.builds(
        lambda key, value: {**event(event_id="bad"), key: value},
        st.sampled_from(["specversion", "id", "source", "type", "subject", "org", "time", "data"]),
        json_values,
    ),
    st.builds(
        lambda value: {
            **event(event_id="bad"),
            "data": {"feature": "api_calls", "quantity": value},
        },
        json_values | st.sampled_from(["-1", "0", "1e400", "0.0000001", "NaN", "1,5", *CONFUSABLE]),
    ),
    st.builds(lambda: {k: v for k, v in event(event_id="bad").items() if k != "subject"}),
)


def still_valid(payload: Any) -> bool:
    from meterd.core.event_parsing import parse_event
    from meterd.core.events import UsageEvent

    return isinstance(parse_event(payload, received_at=NOW), UsageEvent)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bad=st.lists(malformed, min_size=1, max_size=5))
def test_malformed_events_are_dead_lettered_and_the_rest_counted(
    runtime: Runtime, bad: list[Any]
) -> None:
    seed = uuid.uuid4().hex  # the runtime outlives one example: fresh customer and ids
    grant(runtime, quantity=None, customer=f"c{seed}")
    good = [event(customer=f"c{seed}", event_id=f"g{seed}-{i}", quantity="2") for i in range(3)]
    batch: list[Any] = [good[0], *bad, good[1], good[2]]
    before = consumed(runtime, f"c{seed}")
    report = runtime.ingest.ingest(batch, now=NOW)
    truly_bad = [b for b in bad if not still_valid(b)]
    assert report.outcomes[0] == report.outcomes[-1] == Outcome.ACCEPTED
    assert report.counts["invalid"] == len(truly_bad)
    for outcome, reason in zip(report.outcomes, report.reasons, strict=True):
        if outcome is Outcome.INVALID:
            assert reason
    (after,) = consumed(runtime, f"c{seed}").values()
    assert after - sum(before.values(), Decimal(0)) == Decimal(6)


def test_dead_letter_keeps_the_original_payload_and_reason(runtime: Runtime) -> None:
    import json

    bad = {**event(), "data": {"feature": "api_calls", "quantity": "lots"}}
    runtime.ingest.ingest([bad], now=NOW)
    (letter,) = runtime.dead_letters.find()
    assert letter.reason == "invalid"
    assert "quantity" in letter.detail
    assert json.loads(letter.payload) == bad


def test_redelivered_batch_dead_letters_each_event_once(runtime: Runtime) -> None:
    grant(runtime)
    batch = [event(customer="nobody"), {"garbage": True}, event(event_id="ok")]
    runtime.ingest.ingest(batch, now=NOW)
    again = runtime.ingest.ingest(batch, now=NOW)
    assert again.outcomes == [Outcome.NO_ENTITLEMENT, Outcome.INVALID, Outcome.DUPLICATE]
    assert runtime.dead_letters.count_by_reason() == {"no_entitlement": 1, "invalid": 1}


def test_events_with_nul_characters_are_stored_safely(runtime: Runtime) -> None:
    runtime.ingest.ingest([{"id": "a\x00b", "subject": "\x00", "org": "acme"}], now=NOW)
    assert runtime.dead_letters.count_by_reason() == {"invalid": 1}


def test_replay_counts_a_dead_letter_once_its_entitlement_exists(runtime: Runtime) -> None:
    runtime.ingest.ingest([event(customer="late-signup", quantity="4")], now=NOW)
    assert runtime.dead_letters.count_by_reason() == {"no_entitlement": 1}
    grant(runtime, customer="late-signup")
    report = runtime.replay.replay(now=NOW)
    assert dict(report.outcomes) == {"accepted": 1}
    assert runtime.dead_letters.count_by_reason() == {}
    (letter,) = runtime.dead_letters.find(include_replayed=True)
    assert letter.replay_outcome == "accepted"
    assert list(consumed(runtime, "late-signup").values()) == [Decimal(4)]


def test_replaying_twice_counts_once(runtime: Runtime) -> None:
    runtime.ingest.ingest([event(customer="late-signup", quantity="4")], now=NOW)
    grant(runtime, customer="late-signup")
    runtime.replay.replay(now=NOW)
    # The same payload arrives again (a redelivery, or a second replay elsewhere).
    runtime.ingest.ingest([event(customer="late-signup", quantity="4")], now=NOW)
    assert runtime.replay.replay(now=NOW).replayed == 0
    assert list(consumed(runtime, "late-signup").values()) == [Decimal(4)]


def test_a_letter_that_fails_again_for_the_same_reason_stays_listed(runtime: Runtime) -> None:
    runtime.ingest.ingest([event(customer="nobody")], now=NOW)
    report = runtime.replay.replay(now=NOW)
    assert (report.replayed, report.still_dead) == (1, 1)
    assert runtime.dead_letters.count_by_reason() == {"no_entitlement": 1}


def test_an_unreadable_message_is_kept_once_as_an_invalid_dead_letter(runtime: Runtime) -> None:
    record = {"kind": "not_json", "reason": "the message body is not JSON", "body": "{{{"}
    assert runtime.ingest.dead_letter_message(record, NOW) == 1
    assert runtime.ingest.dead_letter_message(dict(record), NOW) == 0  # redelivered
    (letter,) = runtime.dead_letters.find()
    assert letter.reason == "invalid"
    assert letter.detail == "unreadable message: the message body is not JSON"
    assert json.loads(letter.payload) == {"unreadable_message": record}


def test_a_dead_letter_message_task_without_a_record_keeps_what_it_was_given(
    runtime: Runtime,
) -> None:
    runtime.ingest.dead_letter_message(["not", "a", "record"], NOW)
    (letter,) = runtime.dead_letters.find()
    assert letter.detail == "unreadable message: a dead_letter_message task without a record"
    assert json.loads(letter.payload) == {"unreadable_message": {"record": ["not", "a", "record"]}}


def test_a_redelivered_unreadable_message_is_kept_once_whatever_headers_kombu_added(
    runtime: Runtime,
) -> None:
    """kombu's Redis transport adds ``redelivered`` to the headers of a restored message;
    the soak found such messages dead-lettered twice."""
    from meterd.task_messages import unreadable_record

    class Message:
        body = b"{{{ not json"
        content_type = "application/json"
        content_encoding = "utf-8"

        def __init__(self, headers: dict[str, Any]) -> None:
            self.headers = headers

    first = Message({"task": "meterd.ingest_batch", "id": "t-1"})
    again = Message({"task": "meterd.ingest_batch", "id": "t-1", "redelivered": True})
    other = Message({"task": "meterd.ingest_batch", "id": "t-2"})
    for message in (first, again, other):
        record = unreadable_record(message, "not_json", "not JSON", "meterd.ingest")
        runtime.ingest.dead_letter_message(record, NOW)
    assert runtime.dead_letters.count_by_reason() == {"invalid": 2}
