"""Corrections of metered features: a raw event fed to several meters is voided in
every item, a COUNT event takes its one back, and a raw event counted as a distinct
value is recounted out of its period (tests/test_corrections_levels.py has the rest
of the aggregations a difference cannot correct)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterd.core.domain import Outcome
from meterd.core.errors import ConflictError, InvalidError
from meterd.runtime import Runtime

from .conftest import NOW
from .helpers import assert_log_matches_periods, grant
from .test_meters import consumed, ingest, meter, raw, request

LATER = NOW + timedelta(minutes=5)


def void(rt: Runtime, event_id: str = "req-1") -> Any:
    return rt.corrections.void(
        "acme", "gateway", event_id, reason="test traffic", actor="cli", now=LATER
    )


@pytest.fixture
def tokens(runtime: Runtime) -> Runtime:
    for key, path in (("input_tokens", "usage.input"), ("output_tokens", "usage.output")):
        meter(runtime, key, scale=0, event_type="llm.request", value_property=path)
        grant(runtime, feature=key, quantity="1000000")
    meter(runtime, "requests", scale=0, event_type="llm.request", aggregation="COUNT")
    grant(runtime, feature="requests", quantity="100")
    return runtime


def test_a_void_of_a_raw_event_takes_back_every_item(tokens: Runtime) -> None:
    assert (
        ingest(tokens, request(120, 30), request(5, 6, event_id="req-2")) == [Outcome.ACCEPTED] * 2
    )
    tokens.flush.flush_all(NOW)
    made = void(tokens)
    assert sorted((p.feature, p.quantity) for p in made.parts) == [
        ("input_tokens", Decimal(-120)),
        ("output_tokens", Decimal(-30)),
        ("requests", Decimal(-1)),
    ]
    tokens.flush.flush_all(LATER)
    assert consumed(tokens, "input_tokens", now=LATER) == [Decimal(5)]
    assert consumed(tokens, "output_tokens", now=LATER) == [Decimal(6)]
    assert consumed(tokens, "requests", now=LATER) == [Decimal(1)]
    assert_log_matches_periods(tokens)
    with pytest.raises(ConflictError):
        void(tokens)


def test_an_amend_of_a_raw_event_is_refused_with_the_way_to_do_it(tokens: Runtime) -> None:
    assert ingest(tokens, request(120, 30)) == [Outcome.ACCEPTED]
    with pytest.raises(InvalidError, match="void it"):
        tokens.corrections.amend(
            "acme", "gateway", "req-1", {"usage": {"input": 1}}, reason="x", actor="cli", now=LATER
        )


def test_a_void_of_a_unique_count_raw_event_takes_its_value_back(runtime: Runtime) -> None:
    meter(
        runtime,
        "users",
        scale=0,
        event_type="login",
        aggregation="UNIQUE_COUNT",
        value_property="user",
    )
    grant(runtime, feature="users", quantity="100")
    assert (
        ingest(
            runtime,
            raw({"user": "ann"}, type_="login"),
            raw({"user": "bob"}, type_="login", event_id="req-2"),
        )
        == [Outcome.ACCEPTED] * 2
    )
    void(runtime)
    assert consumed(runtime, "users", now=LATER) == [Decimal(1)]
    runtime.flush.flush_all(LATER)
    assert consumed(runtime, "users", now=LATER) == [Decimal(1)]
    assert_log_matches_periods(runtime)
