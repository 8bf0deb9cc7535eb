"""A meter starts at its creation, by event time: a raw event timed before a feature
was created does not feed it, so sending a batch again after a new meter appears
counts nothing for it; an operator's replay of a dead letter counts the event for
every meter that exists at the replay (docs/meters.md, "When a meter starts")."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterd.core.domain import Outcome
from meterd.runtime import Runtime
from meterd.testing import event

from .conftest import NOW
from .helpers import grant

#: The token features exist long before the events of these tests.
LONG_AGO = NOW - timedelta(days=365)
#: The events of these tests: accepted a few minutes before the new meter appears.
SENT_AT = NOW - timedelta(minutes=5)


def raw(event_id: str, usage: dict[str, int], *, time: datetime = SENT_AT) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "gateway",
        "type": "llm.request",
        "subject": "cust-1",
        "org": "acme",
        "time": time.isoformat(),
        "data": {"model": "gpt-4o", "usage": usage},
    }


def create_meter(
    rt: Runtime, key: str, path: str, *, at: datetime, type_: str = "llm.request"
) -> None:
    rt.catalog.create_feature("acme", key, now=at, scale=0, event_type=type_, value_property=path)


@pytest.fixture
def tokens(runtime: Runtime) -> Runtime:
    """input_tokens (created long ago, granted) over llm.request events."""
    create_meter(runtime, "input_tokens", "usage.input", at=LONG_AGO)
    grant(runtime, feature="input_tokens", quantity="1000000")
    return runtime


def ingest(rt: Runtime, *events: dict[str, Any], now: datetime = NOW) -> list[Outcome]:
    return rt.ingest.ingest(list(events), now=now).outcomes


def live(rt: Runtime, feature: str) -> list[Decimal]:
    return [b.consumed for b in rt.balance.current("acme", "cust-1", feature, NOW)]


def flushed(rt: Runtime, feature: str) -> list[Decimal]:
    rt.flush.flush_all(NOW)
    return [b.consumed for b in rt.balance.balances("acme", "cust-1", feature, NOW)]


def logged(rt: Runtime, event_id: str, feature: str) -> Decimal | None:
    key = ("acme", "gateway", f"{event_id}\x1f{feature}")
    found = rt.event_log.find([key]).get(key)
    return found.quantity if found is not None else None


BATCH = [raw(f"req-{i}", {"input": 100, "cached": 200}) for i in range(3)]


def test_a_batch_sent_again_after_a_new_meter_is_created_counts_nothing_for_it(
    tokens: Runtime,
) -> None:
    """The issue's scenario: a resend moved a new cached_tokens meter from 0 to 600."""
    assert ingest(tokens, *BATCH, now=SENT_AT) == [Outcome.ACCEPTED] * 3
    create_meter(tokens, "cached_tokens", "usage.cached", at=NOW)
    grant(tokens, feature="cached_tokens", quantity="1000000")

    assert ingest(tokens, *BATCH) == [Outcome.DUPLICATE] * 3
    assert live(tokens, "cached_tokens") == [Decimal(0)]
    assert flushed(tokens, "cached_tokens") == [Decimal(0)]
    assert [logged(tokens, f"req-{i}", "cached_tokens") for i in range(3)] == [None] * 3
    assert flushed(tokens, "input_tokens") == [Decimal(300)]


def test_a_new_meter_counts_the_events_timed_from_its_creation(tokens: Runtime) -> None:
    create_meter(tokens, "cached_tokens", "usage.cached", at=NOW)
    grant(tokens, feature="cached_tokens", quantity="1000000")
    before = raw("req-before", {"input": 1, "cached": 10}, time=NOW - timedelta(seconds=1))
    at = raw("req-at", {"input": 1, "cached": 20}, time=NOW)
    after = raw("req-after", {"input": 1, "cached": 40}, time=NOW + timedelta(seconds=1))

    assert (
        ingest(tokens, before, at, after, now=NOW + timedelta(seconds=2)) == [Outcome.ACCEPTED] * 3
    )
    assert flushed(tokens, "cached_tokens") == [Decimal(60)]
    assert flushed(tokens, "input_tokens") == [Decimal(3)]
    assert logged(tokens, "req-before", "cached_tokens") is None


def test_a_usage_event_timed_before_its_feature_was_created_still_counts(
    tokens: Runtime,
) -> None:
    """``meterd.usage`` events name their feature: the raw-event rule does not apply.
    (Checked beside a raw event of the same time, which the new meter does not take.)"""
    create_meter(tokens, "cached_tokens", "usage.cached", at=NOW)
    grant(tokens, feature="cached_tokens", quantity="1000000")
    usage = event(feature="cached_tokens", quantity="7", event_id="u-1", time=SENT_AT)
    assert ingest(tokens, usage, raw("req-1", {"input": 1, "cached": 5})) == [Outcome.ACCEPTED] * 2
    assert flushed(tokens, "cached_tokens") == [Decimal(7)]


def test_an_event_only_later_meters_read_is_dead_lettered_and_counted_by_its_replay(
    runtime: Runtime,
) -> None:
    create_meter(runtime, "logins", "user", at=NOW, type_="login")
    grant(runtime, feature="logins", quantity="1000000")
    login = {**raw("l-1", {}), "type": "login", "data": {"user": 3}}

    report = runtime.ingest.ingest([login], now=NOW)
    assert report.outcomes == [Outcome.INVALID]
    assert "the features that meter them were created later" in (report.reasons[0] or "")
    assert report.dead_lettered == 1
    assert live(runtime, "logins") == [Decimal(0)]

    replayed = runtime.replay.replay(now=NOW, org="acme")
    assert replayed.outcomes == {"accepted": 1}
    assert flushed(runtime, "logins") == [Decimal(3)]


def test_a_dead_letter_replayed_after_its_meter_was_created_counts_once_even_if_sent_again(
    runtime: Runtime,
) -> None:
    """No meter read llm.request: dead-lettered. The meter is created; the producer
    sends the event again (not counted: it is timed before the meter), then the
    operator replays the letter (counted), then the producer sends it once more."""
    grant(runtime, quantity=None)  # something else, so the org's meters are kept
    first = runtime.ingest.ingest([raw("req-1", {"input": 120})], now=SENT_AT)
    assert first.outcomes == [Outcome.INVALID] and first.dead_lettered == 1
    create_meter(runtime, "input_tokens", "usage.input", at=NOW)
    grant(runtime, feature="input_tokens", quantity="1000000")

    assert ingest(runtime, raw("req-1", {"input": 120})) == [Outcome.INVALID]
    assert live(runtime, "input_tokens") == [Decimal(0)]

    assert runtime.replay.replay(now=NOW, org="acme").outcomes == {"accepted": 1}
    assert ingest(runtime, raw("req-1", {"input": 120})) == [Outcome.INVALID]
    assert flushed(runtime, "input_tokens") == [Decimal(120)]
    assert logged(runtime, "req-1", "input_tokens") == Decimal(120)
    assert runtime.dead_letters.find(org_id="acme", limit=10) == []


def test_a_partly_counted_event_replayed_counts_only_its_missing_items(tokens: Runtime) -> None:
    """input_tokens counted it; output_tokens (no grant yet) dead-lettered it whole.
    A meter created afterwards does not take the producer's resend; the replay, once
    the grant exists, counts the output item and the new meter's, never input again."""
    create_meter(tokens, "output_tokens", "usage.output", at=LONG_AGO)
    request = raw("req-1", {"input": 5, "output": 1, "cached": 2})
    assert ingest(tokens, request, now=SENT_AT) == [Outcome.NO_ENTITLEMENT]
    create_meter(tokens, "cached_tokens", "usage.cached", at=NOW)
    grant(tokens, feature="cached_tokens", quantity="100")

    assert ingest(tokens, request) == [Outcome.NO_ENTITLEMENT]  # output still has no grant
    assert live(tokens, "cached_tokens") == [Decimal(0)]

    grant(tokens, feature="output_tokens", quantity="100")
    assert tokens.replay.replay(now=NOW, org="acme").outcomes == {"accepted": 1}
    assert flushed(tokens, "input_tokens") == [Decimal(5)]
    assert flushed(tokens, "output_tokens") == [Decimal(1)]
    assert flushed(tokens, "cached_tokens") == [Decimal(2)]


def test_the_kept_meters_carry_their_features_creation_time(tokens: Runtime) -> None:
    (meter,) = tokens.meters.refresh("acme").by_type["llm.request"]
    assert meter.created_at == LONG_AGO
