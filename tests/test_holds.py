"""Holds: reserve now, settle what was used (CONTRACT 6a, docs/holds.md).

Dated from the real clock: a hold's record expires in Redis by Redis's clock.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from meterd.core.errors import InvalidError
from meterd.core.events import UsageEvent
from meterd.core.holds import HOLD_SOURCE, HoldStatus
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.holds import (
    HoldNotFoundError,
    HoldResult,
    HoldStateError,
    TooManyHoldsError,
)
from meterd.services.reserve import Reservation, ReserveOutcome

from .helpers import assert_log_matches_periods, grant


def _grant(rt: Runtime, quantity: str = "100", **extra: object) -> uuid.UUID:
    now = utcnow()
    return grant(
        rt,
        quantity=quantity,
        starts_at=now - timedelta(days=1),
        ends_at=now + timedelta(days=30),
        now=now,
        **extra,  # type: ignore[arg-type]
    ).id


def _hold(
    rt: Runtime,
    quantity: str,
    key: str,
    *,
    seconds: int = 60,
    now: datetime | None = None,
    customer: str = "cust-1",
) -> HoldResult:
    request = Reservation("acme", customer, "api_calls", Decimal(quantity), key)
    return rt.holds.hold(request, seconds, now or utcnow())


def _use(rt: Runtime, quantity: str, event_id: str, now: datetime | None = None) -> None:
    now = now or utcnow()
    event = UsageEvent(
        "acme", "cust-1", "api_calls", "test", event_id, now, Decimal(quantity), None
    )
    rt.counting.count([event], now)


def _value(rt: Runtime, now: datetime | None = None) -> tuple[Decimal, Decimal, Decimal | None]:
    value = rt.balance.value("acme", "cust-1", "api_calls", now or utcnow())
    return value.consumed, value.held, value.remaining


def test_a_hold_takes_room_at_once_without_consuming(runtime: Runtime) -> None:
    _grant(runtime)
    result = _hold(runtime, "40", "h1")
    assert result.outcome is ReserveOutcome.GRANTED
    assert result.hold is not None and result.hold.status is HoldStatus.HELD
    assert _value(runtime) == (Decimal(0), Decimal(40), Decimal(60))


def test_a_hold_larger_than_the_room_left_is_denied_and_holds_nothing(runtime: Runtime) -> None:
    _grant(runtime)
    _hold(runtime, "70", "h1")
    result = _hold(runtime, "31", "h2")
    assert (result.outcome, result.hold) == (ReserveOutcome.DENIED, None)
    assert _value(runtime) == (Decimal(0), Decimal(70), Decimal(30))


def test_a_reservation_cannot_take_units_a_hold_keeps(runtime: Runtime) -> None:
    _grant(runtime, "10")
    _hold(runtime, "8", "h1")
    request = Reservation("acme", "cust-1", "api_calls", Decimal(3), "r1")
    assert runtime.reserve.reserve(request, utcnow()) is ReserveOutcome.DENIED


def test_settle_consumes_exactly_the_settled_quantity_and_frees_the_rest(runtime: Runtime) -> None:
    _grant(runtime)
    hold = _hold(runtime, "40", "h1").hold
    assert hold is not None
    result = runtime.holds.settle("acme", hold.id, Decimal("37"), utcnow())
    assert result.settled_now and result.hold.status is HoldStatus.SETTLED
    assert result.hold.settled_quantity == Decimal(37)
    assert _value(runtime) == (Decimal(37), Decimal(0), Decimal(63))


def test_a_settle_retried_with_the_same_quantity_counts_once(runtime: Runtime) -> None:
    _grant(runtime)
    hold = _hold(runtime, "40", "h1").hold
    assert hold is not None
    runtime.holds.settle("acme", hold.id, Decimal("37"), utcnow())
    again = runtime.holds.settle("acme", hold.id, Decimal("37"), utcnow())
    assert not again.settled_now
    assert _value(runtime)[0] == Decimal(37)


def test_a_settle_retried_with_another_quantity_is_a_conflict(runtime: Runtime) -> None:
    _grant(runtime)
    hold = _hold(runtime, "40", "h1").hold
    assert hold is not None
    runtime.holds.settle("acme", hold.id, Decimal("37"), utcnow())
    with pytest.raises(HoldStateError, match="settled with 37"):
        runtime.holds.settle("acme", hold.id, Decimal("38"), utcnow())


def test_settling_more_than_held_counts_it_all_as_overage_past_the_limit(
    runtime: Runtime,
) -> None:
    _grant(runtime, "10")
    hold = _hold(runtime, "8", "h1").hold
    assert hold is not None
    runtime.holds.settle("acme", hold.id, Decimal("15"), utcnow())
    value = runtime.balance.value("acme", "cust-1", "api_calls", utcnow())
    assert (value.consumed, value.overage, value.held) == (Decimal(15), Decimal(5), Decimal(0))


def test_settling_zero_consumes_nothing_and_frees_the_hold(runtime: Runtime) -> None:
    _grant(runtime, "10")
    hold = _hold(runtime, "8", "h1").hold
    assert hold is not None
    result = runtime.holds.settle("acme", hold.id, Decimal(0), utcnow())
    assert result.hold.status is HoldStatus.SETTLED
    assert _value(runtime) == (Decimal(0), Decimal(0), Decimal(10))


def test_release_gives_the_units_back_and_is_idempotent(runtime: Runtime) -> None:
    _grant(runtime, "10")
    hold = _hold(runtime, "8", "h1").hold
    assert hold is not None
    assert runtime.holds.release("acme", hold.id, utcnow()).status is HoldStatus.RELEASED
    assert runtime.holds.release("acme", hold.id, utcnow()).status is HoldStatus.RELEASED
    assert _value(runtime) == (Decimal(0), Decimal(0), Decimal(10))


def test_a_released_hold_cannot_be_settled(runtime: Runtime) -> None:
    _grant(runtime, "10")
    hold = _hold(runtime, "8", "h1").hold
    assert hold is not None
    runtime.holds.release("acme", hold.id, utcnow())
    with pytest.raises(HoldStateError, match="released"):
        runtime.holds.settle("acme", hold.id, Decimal(1), utcnow())


def test_a_settled_hold_cannot_be_released(runtime: Runtime) -> None:
    _grant(runtime, "10")
    hold = _hold(runtime, "8", "h1").hold
    assert hold is not None
    runtime.holds.settle("acme", hold.id, Decimal(1), utcnow())
    with pytest.raises(HoldStateError, match="settled"):
        runtime.holds.release("acme", hold.id, utcnow())


def test_a_hold_past_its_expiry_frees_its_units_by_time_alone(runtime: Runtime) -> None:
    _grant(runtime, "10")
    now = utcnow()
    _hold(runtime, "8", "h1", seconds=30, now=now)
    assert _value(runtime, now + timedelta(seconds=29))[1] == Decimal(8)
    # nothing ran in between: the read at the expiry frees it in the same step
    assert _value(runtime, now + timedelta(seconds=30)) == (Decimal(0), Decimal(0), Decimal(10))


def test_a_reservation_after_a_holds_expiry_gets_its_units(runtime: Runtime) -> None:
    _grant(runtime, "10")
    now = utcnow()
    _hold(runtime, "8", "h1", seconds=30, now=now)
    request = Reservation("acme", "cust-1", "api_calls", Decimal(10), "r1")
    later = now + timedelta(seconds=31)
    assert runtime.reserve.reserve(request, later) is ReserveOutcome.GRANTED


def test_an_expired_hold_cannot_be_settled(runtime: Runtime) -> None:
    _grant(runtime, "10")
    now = utcnow()
    hold = _hold(runtime, "8", "h1", seconds=30, now=now).hold
    assert hold is not None
    with pytest.raises(HoldStateError, match="expired"):
        runtime.holds.settle("acme", hold.id, Decimal(1), now + timedelta(seconds=30))
    assert runtime.holds.get("acme", hold.id, now).status is HoldStatus.EXPIRED


def test_the_same_idempotency_key_finds_the_same_hold(runtime: Runtime) -> None:
    _grant(runtime, "10")
    first = _hold(runtime, "4", "h1")
    second = _hold(runtime, "4", "h1")
    assert second.outcome is ReserveOutcome.ALREADY_GRANTED
    assert first.hold is not None and second.hold is not None
    assert first.hold.id == second.hold.id
    assert _value(runtime)[1] == Decimal(4)


def test_another_org_cannot_see_or_settle_a_hold(runtime: Runtime) -> None:
    _grant(runtime, "10")
    hold = _hold(runtime, "4", "h1").hold
    assert hold is not None
    with pytest.raises(HoldNotFoundError):
        runtime.holds.get("globex", hold.id, utcnow())
    with pytest.raises(HoldNotFoundError):
        runtime.holds.settle("globex", hold.id, Decimal(1), utcnow())


def test_usage_passes_a_holds_share_to_the_next_grant(runtime: Runtime) -> None:
    first = _grant(runtime, "10", priority=0)
    second = _grant(runtime, "10", priority=1)
    _hold(runtime, "8", "h1")
    _use(runtime, "5", "e1")
    balances = {
        b.entitlement_id: (b.consumed, b.held)
        for b in runtime.balance.value("acme", "cust-1", "api_calls", utcnow()).balances
    }
    assert balances[first] == (Decimal(2), Decimal(8))
    assert balances[second] == (Decimal(3), Decimal(0))


def test_a_hold_burns_down_across_grants_and_settles_on_them(runtime: Runtime) -> None:
    _grant(runtime, "10", priority=0)
    _grant(runtime, "10", priority=1)
    hold = _hold(runtime, "15", "h1").hold
    assert hold is not None
    assert _value(runtime) == (Decimal(0), Decimal(15), Decimal(5))
    runtime.holds.settle("acme", hold.id, Decimal(12), utcnow())
    assert _value(runtime) == (Decimal(12), Decimal(0), Decimal(8))


def test_settled_usage_is_flushed_and_logged_under_the_holds_id(runtime: Runtime) -> None:
    _grant(runtime)
    now = utcnow()
    hold = _hold(runtime, "40", "h1", now=now).hold
    assert hold is not None
    runtime.holds.settle("acme", hold.id, Decimal("37"), now + timedelta(seconds=5))
    runtime.flush.flush_all(now + timedelta(seconds=6))
    found = runtime.event_log.find([("acme", HOLD_SOURCE, str(hold.id))])
    logged = found[("acme", HOLD_SOURCE, str(hold.id))]
    assert logged.quantity == Decimal(37)
    assert_log_matches_periods(runtime)
    assert _value(runtime, now + timedelta(seconds=7))[0] == Decimal(37)


def test_the_expiry_job_frees_holds_nobody_read(runtime: Runtime) -> None:
    _grant(runtime, "10")
    now = utcnow()
    hold = _hold(runtime, "8", "h1", seconds=10, now=now).hold
    assert hold is not None
    assert runtime.holds.expire_due(now + timedelta(seconds=11)) == 1
    stored = runtime.hold_store.get("acme", hold.id)
    assert stored is not None and stored.status is HoldStatus.EXPIRED
    assert runtime.holds.expire_due(now + timedelta(seconds=12)) == 0


def test_a_hold_settled_with_zero_is_logged_with_zero_and_counts_nothing(runtime: Runtime) -> None:
    _grant(runtime, "10")
    now = utcnow()
    hold = _hold(runtime, "8", "h1", now=now).hold
    assert hold is not None
    runtime.holds.settle("acme", hold.id, Decimal(0), now)
    runtime.flush.flush_all(now)
    logged = runtime.event_log.find([("acme", HOLD_SOURCE, str(hold.id))])
    assert logged[("acme", HOLD_SOURCE, str(hold.id))].quantity == Decimal(0)
    assert_log_matches_periods(runtime)


def test_a_hold_with_data_goes_to_the_grant_whose_dimensions_match_and_settles_there(
    runtime: Runtime,
) -> None:
    other = _grant(runtime, "10", filters={"model": "o3"}, priority=0)
    gpt = _grant(runtime, "10", filters={"model": "gpt-4o"}, priority=1)
    now = utcnow()
    request = Reservation("acme", "cust-1", "api_calls", Decimal(6), "h1", data={"model": "gpt-4o"})
    hold = runtime.holds.hold(request, 60, now).hold
    assert hold is not None
    runtime.holds.settle("acme", hold.id, Decimal(4), now)
    balances = {
        b.entitlement_id: (b.consumed, b.held)
        for b in runtime.balance.value("acme", "cust-1", "api_calls", now).balances
    }
    assert balances == {other: (Decimal(0), Decimal(0)), gpt: (Decimal(4), Decimal(0))}


def test_a_hold_on_a_level_feature_is_refused(runtime: Runtime) -> None:
    runtime.catalog.create_feature(
        "acme", "seats", now=utcnow(), aggregation="MAX", value_property="n", event_type="seats"
    )
    request = Reservation("acme", "cust-1", "seats", Decimal(1), "h1")
    with pytest.raises(InvalidError, match="only SUM and COUNT"):
        runtime.holds.hold(request, 60, utcnow())


def test_a_settled_holds_usage_can_be_voided_like_any_usage(runtime: Runtime) -> None:
    _grant(runtime, "10")
    now = utcnow()
    hold = _hold(runtime, "8", "h1", now=now).hold
    assert hold is not None
    runtime.holds.settle("acme", hold.id, Decimal(4), now)
    runtime.corrections.void(
        "acme", HOLD_SOURCE, str(hold.id), reason="refund", actor="test", now=now
    )
    assert _value(runtime, now) == (Decimal(0), Decimal(0), Decimal(10))
    runtime.flush.flush_all(now)
    assert_log_matches_periods(runtime)


def test_an_amend_burns_down_past_the_units_a_hold_keeps(runtime: Runtime) -> None:
    first = _grant(runtime, "10", priority=0)
    second = _grant(runtime, "10", priority=1)
    now = utcnow()
    _hold(runtime, "8", "h1", now=now)
    _use(runtime, "2", "e1", now)
    runtime.corrections.amend(
        "acme", "test", "e1", {"feature": "api_calls", "quantity": "5"},
        reason="wrong count", actor="test", now=now,
    )  # fmt: skip
    balances = {
        b.entitlement_id: (b.consumed, b.held)
        for b in runtime.balance.value("acme", "cust-1", "api_calls", now).balances
    }
    assert balances == {first: (Decimal(2), Decimal(8)), second: (Decimal(3), Decimal(0))}


def test_a_customer_keeping_the_most_live_holds_it_may_is_refused_another(
    runtime: Runtime,
) -> None:
    _grant(runtime, "100")
    runtime.holds.max_live_holds = 3
    now = utcnow()
    for i in range(3):
        _hold(runtime, "1", f"h{i}", seconds=10, now=now)
    with pytest.raises(TooManyHoldsError):
        _hold(runtime, "1", "h3", now=now)
    # expired holds are not live: the bound counts what holds units now
    assert _hold(runtime, "1", "h4", now=now + timedelta(seconds=10)).hold is not None


def test_a_hold_settled_after_a_renewal_counts_in_the_period_of_the_holds_time(
    runtime: Runtime,
) -> None:
    now = utcnow()
    start = now - timedelta(minutes=59, seconds=50)  # an hourly term renewing in 10 s
    grant(runtime, quantity="10", starts_at=start, ends_at=start + timedelta(hours=1),
          auto_renew=True, now=now)  # fmt: skip
    hold = _hold(runtime, "8", "h1", now=now).hold
    assert hold is not None
    later = now + timedelta(seconds=30)
    runtime.holds.settle("acme", hold.id, Decimal(6), later)
    (ent,) = runtime.balance.value("acme", "cust-1", "api_calls", later).balances
    periods = runtime.queries.periods("acme", ent.entitlement_id, later)
    consumed = {p.period.start: p.consumed for p in periods}
    assert consumed == {start: Decimal(6), start + timedelta(hours=1): Decimal(0)}
    assert ent.consumed == 0  # the current (renewed) term took nothing
