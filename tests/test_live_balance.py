"""The live read (Redis alone) agrees with the database read, state by state."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from meterd.core.domain import Balance, BillingType
from meterd.core.lifecycle import OperatorAction
from meterd.runtime import Runtime
from meterd.testing import event

from .conftest import NOW
from .helpers import grant


def compared(rt: Runtime, now: object = NOW) -> list[tuple[object, ...]]:
    """(id, period start, quantity, consumed, state, usable) by both reads; equal."""
    live = rt.balance.live("acme", "cust-1", "api_calls", now)  # type: ignore[arg-type]
    exact = rt.balance.balances("acme", "cust-1", "api_calls", now)  # type: ignore[arg-type]
    assert live is not None

    def key(b: Balance) -> tuple[object, ...]:
        return (b.entitlement_id, b.period_start, b.quantity, b.consumed, b.state, b.usable)

    assert sorted(map(key, live), key=str) == sorted(map(key, exact), key=str)
    return [key(b) for b in live]


def use(rt: Runtime, quantity: str, event_id: str, when: object = NOW) -> None:
    rt.ingest.ingest([event(quantity=quantity, event_id=event_id, time=when)], now=NOW)  # type: ignore[arg-type]


def test_live_matches_with_pending_and_flushed_usage_over_two_entitlements(
    runtime: Runtime,
) -> None:
    grant(runtime, quantity="5", priority=0)
    grant(runtime, quantity=None, priority=1)
    use(runtime, "3", "a")
    runtime.flush.flush_all(NOW)
    use(runtime, "4", "b")
    rows = compared(runtime)
    assert [r[3] for r in rows] == [Decimal("5.000000"), Decimal("2.000000")]


def test_live_matches_for_pay_per_use_months(runtime: Runtime) -> None:
    grant(runtime, quantity="100", billing_type=BillingType.PAY_PER_USE, ends_at=None)
    use(runtime, "7", "a")
    use(runtime, "2", "late", NOW - timedelta(days=30))
    compared(runtime)


def test_live_matches_for_an_exhausted_grant(runtime: Runtime) -> None:
    grant(runtime, quantity="2")
    use(runtime, "3", "a")
    (row,) = compared(runtime)
    assert row[4] == "EXHAUSTED"


def test_live_matches_for_a_suspended_grant(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="2")
    runtime.catalog.change_status(ent.id, OperatorAction.SUSPEND, NOW)
    (row,) = compared(runtime)
    assert (row[4], row[5]) == ("SUSPENDED", False)


def test_live_judges_grace_and_expiry_by_the_clock(runtime: Runtime) -> None:
    ends = NOW + timedelta(hours=1)
    grant(runtime, quantity="10", ends_at=ends, grace=timedelta(days=1))
    runtime.lifecycle.advance(ends)
    (row,) = compared(runtime, ends)
    assert (row[4], row[5]) == ("GRACE", True)


def test_live_is_none_when_the_customer_is_not_cached(runtime: Runtime) -> None:
    grant(runtime)
    runtime.redis.delete(runtime.redis_keys.resolution("acme", "cust-1", "api_calls"))
    assert runtime.balance.live("acme", "cust-1", "api_calls", NOW) is None


def test_current_loads_an_uncached_customer_and_then_reads_live(runtime: Runtime) -> None:
    grant(runtime, quantity="10")
    use(runtime, "3", "a")
    key = runtime.redis_keys.resolution("acme", "cust-1", "api_calls")
    runtime.redis.delete(key)
    (balance,) = runtime.balance.current("acme", "cust-1", "api_calls", NOW)
    assert balance.consumed == Decimal("3.000000")
    assert runtime.redis.exists(key) and balance.flushed is None  # answered live
