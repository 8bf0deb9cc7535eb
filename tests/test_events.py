"""CloudEvents usage events: what is accepted and how refusals are explained."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from meterd.core.event_parsing import parse_event
from meterd.core.events import InvalidEvent, RawEvent, UsageEvent
from meterd.testing import event

from .conftest import NOW


def parse(payload: Any, **kwargs: Any) -> UsageEvent | InvalidEvent:
    return parse_event(payload, received_at=NOW, **kwargs)


def test_valid_event_is_parsed_into_an_exact_decimal() -> None:
    parsed = parse(event(quantity="1.25", time=NOW))
    assert isinstance(parsed, UsageEvent)
    assert (parsed.org, parsed.customer, parsed.quantity) == ("acme", "cust-1", Decimal("1.25"))
    assert parsed.units == 1_250_000


def test_event_without_time_is_timed_at_receipt() -> None:
    parsed = parse(event())
    assert isinstance(parsed, UsageEvent) and parsed.time == NOW


def test_org_from_an_api_key_overrides_the_attribute() -> None:
    parsed = parse(event(org="mallory"), org="acme")
    assert isinstance(parsed, UsageEvent) and parsed.org == "acme"


def test_entitlement_id_is_optional_and_must_be_a_uuid() -> None:
    target = uuid.uuid4()
    parsed = parse(event(entitlement_id=str(target)))
    assert isinstance(parsed, UsageEvent) and parsed.entitlement_id == target
    assert isinstance(parse(event(entitlement_id="nope")), InvalidEvent)


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"type": "not a type"}, "type"),
        ({"subject": ""}, "subject"),
        ({"subject": "x" * 129}, "subject"),
        ({"org": "a:b"}, "org"),
        ({"id": "bad\x00id"}, "id"),
        ({"time": "2026-11-22T10:00:00"}, "timezone"),
        ({"time": "yesterday"}, "time"),
        ({"data": {"feature": "api_calls", "quantity": "-1"}}, "no sign"),
        ({"data": {"feature": "api_calls", "quantity": "0"}}, "positive"),
        ({"data": {"feature": "api_calls", "quantity": "0.0000001"}}, "at most 6 after the point"),
        ({"data": {"feature": "api calls", "quantity": "1"}}, "feature"),
        ({"data": {"quantity": "1"}}, "feature"),
        ({"data": None}, "data"),
    ],
)
def test_invalid_event_says_what_is_wrong(change: dict[str, Any], mentions: str) -> None:
    parsed = parse({**event(), **change})
    assert isinstance(parsed, InvalidEvent)
    assert mentions in parsed.reason


@pytest.mark.parametrize("payload", [None, 42, "text", [event()], b"bytes"])
def test_non_object_is_invalid(payload: Any) -> None:
    assert isinstance(parse(payload), InvalidEvent)


def test_an_event_of_another_type_is_a_raw_event_for_the_meters() -> None:
    parsed = parse({**event(), "type": "llm.request", "data": {"model": "gpt-4o"}})
    assert isinstance(parsed, RawEvent)
    assert (parsed.type, parsed.data) == ("llm.request", {"model": "gpt-4o"})


def test_a_raw_event_needs_data_as_an_object() -> None:
    parsed = parse({**event(), "type": "llm.request", "data": [1]})
    assert isinstance(parsed, InvalidEvent)
    assert "data" in parsed.reason
