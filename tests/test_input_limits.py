"""Issue 13: input limits on events that arrive in a Celery message, already decoded
by kombu (no HTTP layer bounded them): nesting, size, text that is not Unicode, NaN,
objects kombu revives from ``__type__``, and quantities outside the grammar are each
dead-lettered as ``invalid`` with the field named, and never crash the batch: the
valid events of the same batch are counted."""

from __future__ import annotations

import json
import sys
import uuid
from decimal import Decimal
from typing import Any

import pytest

from meterd.core.domain import Outcome
from meterd.core.event_parsing import parse_event
from meterd.core.events import (
    MAX_EVENT_BYTES,
    MAX_EVENT_DEPTH,
    InvalidEvent,
    UsageEvent,
)
from meterd.runtime import Runtime
from meterd.testing import event

from .conftest import NOW
from .helpers import consumed, grant


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def with_data(event_id: str, **extra: Any) -> dict[str, Any]:
    base = event(event_id=event_id, time=NOW)
    return {**base, "data": {**base["data"], **extra}}


HOSTILE = [
    ("deep", with_data("deep", tags=nested(5000)), "data.tags[0]"),
    ("huge", with_data("huge", blob="x" * (MAX_EVENT_BYTES + 1)), "data: the event is"),
    ("nan", with_data("nan", ratio=float("nan")), "data.ratio: NaN"),
    ("inf", with_data("inf", ratio=float("-inf")), "data.ratio: NaN and infinities"),
    ("surrogate", with_data("surrogate", note="\ud800"), "data.note: text is not valid Unicode"),
    ("revived", with_data("revived", ref=uuid.uuid4()), "data.ref: not a JSON value (UUID)"),
    ("decimal", with_data("decimal", price=Decimal("1.5")), "data.price: not a JSON value"),
    ("extension", {**event(event_id="extension", time=NOW), "ext": nested(40)}, "ext[0]"),
    ("confusable", with_data("confusable", quantity="\uff11"), "data.quantity"),
    ("separator", with_data("separator", quantity="1_000"), "data.quantity"),
    ("exponent", with_data("exponent", quantity="1e1"), "data.quantity"),
    ("spaces", with_data("spaces", quantity=" 2 "), "data.quantity"),
]


@pytest.mark.parametrize(("name", "payload", "says"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_event_in_a_message_is_dead_lettered_naming_the_field_and_the_batch_counts(
    runtime: Runtime, name: str, payload: dict[str, Any], says: str
) -> None:
    grant(runtime, quantity=None)
    batch = [event(event_id="before", time=NOW), payload, event(event_id="after", time=NOW)]
    report = runtime.ingest.ingest(batch, now=NOW)
    assert report.outcomes == [Outcome.ACCEPTED, Outcome.INVALID, Outcome.ACCEPTED]
    assert says in (report.reasons[1] or ""), report.reasons[1]
    runtime.flush.flush_all(NOW)
    assert sum(consumed(runtime).values()) == 2
    (letter,) = runtime.dead_letters.find(reason="invalid")
    assert letter.detail == report.reasons[1]
    json.loads(letter.payload)  # stored, and readable


def test_a_payload_too_deep_for_any_encoder_is_kept_as_a_bounded_stand_in(
    runtime: Runtime,
) -> None:
    payload = with_data("deep", tags=nested(sys.getrecursionlimit() * 5))
    runtime.ingest.ingest([payload], now=NOW)  # json.dumps of it would raise RecursionError
    (letter,) = runtime.dead_letters.find(reason="invalid")
    kept = json.loads(letter.payload)
    assert kept["id"] == "deep" and kept["source"] == "tests"
    assert kept["meterd_not_kept"] == letter.detail
    assert len(letter.payload) < 3000


def test_an_event_at_the_depth_limit_is_valid_and_one_deeper_is_not() -> None:
    # The event is level 1, data 2, the list at data.tags 3.
    at_limit = with_data("e", tags=nested(MAX_EVENT_DEPTH - 2))
    assert isinstance(parse_event(at_limit, received_at=NOW), UsageEvent)
    deeper = with_data("e", tags=nested(MAX_EVENT_DEPTH - 1))
    parsed = parse_event(deeper, received_at=NOW)
    assert isinstance(parsed, InvalidEvent)
    assert parsed.reason.endswith(f"nested deeper than {MAX_EVENT_DEPTH} levels")


def test_an_event_at_the_size_limit_is_valid_and_one_byte_more_is_not() -> None:
    empty = with_data("e", blob="")
    room = MAX_EVENT_BYTES - len(json.dumps(empty, separators=(",", ":")).encode())
    assert isinstance(parse_event(with_data("e", blob="x" * room), received_at=NOW), UsageEvent)
    parsed = parse_event(with_data("e", blob="x" * (room + 1)), received_at=NOW)
    assert isinstance(parsed, InvalidEvent)
    assert parsed.reason == (
        f"data: the event is {MAX_EVENT_BYTES + 1:,} bytes as JSON, at most {MAX_EVENT_BYTES:,}"
    )


def test_the_size_limit_counts_utf8_bytes_not_characters() -> None:
    empty = with_data("e", blob="")
    room = MAX_EVENT_BYTES - len(json.dumps(empty, separators=(",", ":")).encode())
    assert isinstance(
        parse_event(with_data("e", blob="é" * (room // 2)), received_at=NOW), UsageEvent
    )
    too_big = with_data("e", blob="é" * (room // 2 + 1))
    assert isinstance(parse_event(too_big, received_at=NOW), InvalidEvent)


@pytest.mark.parametrize(("field", "longest"), [("id", 512), ("source", 512), ("subject", 128)])
def test_ids_are_bounded_and_the_longest_is_valid(field: str, longest: str | int) -> None:
    assert isinstance(
        parse_event({**event(), field: "a" * int(longest)}, received_at=NOW), UsageEvent
    )
    parsed = parse_event({**event(), field: "a" * (int(longest) + 1)}, received_at=NOW)
    assert isinstance(parsed, InvalidEvent)
    assert parsed.reason == f"{field}: String should have at most {longest} characters"


def test_a_json_float_quantity_in_a_message_counts_by_its_shortest_form(runtime: Runtime) -> None:
    grant(runtime, quantity=None)
    # kombu has decoded 0.1 and 10.0 (or 1e1: the same float) already: plain forms.
    runtime.ingest.ingest([with_data("a", quantity=0.1), with_data("b", quantity=10.0)], now=NOW)
    runtime.flush.flush_all(NOW)
    assert sum(consumed(runtime).values()) == Decimal("10.1")


def test_a_float_quantity_beyond_what_a_float_keeps_is_dead_lettered(runtime: Runtime) -> None:
    report = runtime.ingest.ingest([with_data("big", quantity=1e16)], now=NOW)
    assert report.outcomes == [Outcome.INVALID]
    assert "without an exponent" in (report.reasons[0] or "")
