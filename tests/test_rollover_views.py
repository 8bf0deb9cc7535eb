"""The resolution views of an entitlement that rolls over (read from the database:
storage/resolution_views.py) carry its rollover and keep the periods back to one
whose limit is final, even those that ended before the late window, so the walk
(``lifecycle.limit_units``, ingest's ``rolled_limit``) never reads a term it was
not given; a stored final carry (``usage_periods.rolled_over``) ends it there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import update

from meterd.runtime import Runtime
from meterd.storage.models import Entitlement, UsagePeriod

from .conftest import NOW
from .helpers import grant

LATE = timedelta(days=35)


def d(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def backdated(rt: Runtime, rollover_max: str | None) -> Entitlement:
    """100 a month from 2026-07-10, auto-renewing, created at NOW (2026-11-22):
    renewed four times (terms from Jul 10, Aug 10, Sep 10, Oct 10, Nov 10)."""
    ent = grant(
        rt, quantity="100", starts_at=d(2026, 7, 10), ends_at=d(2026, 8, 10), auto_renew=True
    )
    rt.lifecycle.advance_all(NOW)
    if rollover_max is not None:
        with rt.database.sessions.begin() as s:
            s.execute(
                update(Entitlement)
                .where(Entitlement.id == ent.id)
                .values(rollover_max=Decimal(rollover_max), rollover_min=Decimal(0))
            )
    return ent


def starts(rt: Runtime) -> list[datetime]:
    views = rt.resolution_views.views([("acme", "cust-1", "api_calls")], usable_after=NOW - LATE)
    (view,), _ = views[("acme", "cust-1", "api_calls")]
    return sorted(p.start for p in view.periods)


def test_without_rollover_only_the_recent_periods_are_read(runtime: Runtime) -> None:
    backdated(runtime, None)
    assert starts(runtime)[0] == d(2026, 10, 10)  # Jul 10 ended before Oct 18: left out


def test_with_rollover_the_chain_goes_back_to_a_final_limit(runtime: Runtime) -> None:
    ent = backdated(runtime, "50")
    views = runtime.resolution_views.views(
        [("acme", "cust-1", "api_calls")], usable_after=NOW - LATE
    )
    (view,), _ = views[("acme", "cust-1", "api_calls")]
    assert view.renewal is not None and view.renewal.rollover_max == Decimal(50)
    assert min(p.start for p in view.periods) == d(2026, 7, 10)  # the first term: final
    # a final carry stored on the Oct 10 term ends the chain there (Aug 10 and Sep 10
    # were summarised by the catch-up: no rows, nothing consumed)
    with runtime.database.sessions.begin() as s:
        s.execute(
            update(UsagePeriod)
            .where(
                UsagePeriod.entitlement_id == ent.id, UsagePeriod.period_start == d(2026, 10, 10)
            )
            .values(rolled_over=Decimal(7))
        )
    got = starts(runtime)
    assert got[0] == d(2026, 10, 10)
    views = runtime.resolution_views.views(
        [("acme", "cust-1", "api_calls")], usable_after=NOW - LATE
    )
    (view,), _ = views[("acme", "cust-1", "api_calls")]
    assert [p.rolled_over for p in view.periods if p.start == d(2026, 10, 10)] == [Decimal(7)]


def test_ingest_counts_with_the_carry_read_from_the_database(runtime: Runtime) -> None:
    """The entry the cache writes from the database. Aug 10 and Sep 10 were never
    used, so each carried the most (50): the Oct 10 term holds 150. A late event of
    120 into it leaves 30, so the Nov 10 term takes 100 + MIN(50, 30) = 130. A final
    carry of 0 stored on the Oct 10 term ends the walk there: 100 - 120 left
    nothing, and the Nov 10 term holds 100."""
    from .test_rollover_ingest import adder
    from .test_rollover_ingest import usage as usage_at_scale_0

    def usage(customer: str, at: datetime, units: int) -> Any:
        return usage_at_scale_0(customer, at, units, scale=6)  # the feature's scale

    ent = backdated(runtime, "50")
    wanted = [("acme", "cust-1", "api_calls")]
    runtime.resolution.refresh(wanted, NOW)
    add = adder(runtime)
    assert add([usage("cust-1", d(2026, 11, 1), 120)], now=NOW) == ["a"]
    assert add([usage("cust-1", NOW, 131)], now=NOW, strict=True) == ["x"]
    with runtime.database.sessions.begin() as s:
        s.execute(
            update(UsagePeriod)
            .where(
                UsagePeriod.entitlement_id == ent.id, UsagePeriod.period_start == d(2026, 10, 10)
            )
            .values(rolled_over=Decimal(0))
        )
    runtime.resolution.refresh(wanted, NOW)
    assert add([usage("cust-1", NOW, 101)], now=NOW, strict=True) == ["x"]
    assert add([usage("cust-1", NOW, 100)], now=NOW, strict=True) == ["a"]


def test_the_value_read_shows_the_rolled_over_quantity(runtime: Runtime) -> None:
    """The value read, from Redis (the cached entry and the running totals) and from
    the database (flushed and pending), shows the Nov 10 term's quantity with its
    carry, as ingest judges it: 130 after the late 120 into the Oct 10 term."""
    from .test_rollover_ingest import adder
    from .test_rollover_ingest import usage as usage_at_scale_0

    ent = backdated(runtime, "50")
    wanted = [("acme", "cust-1", "api_calls")]
    runtime.resolution.refresh(wanted, NOW)
    late = usage_at_scale_0("cust-1", d(2026, 11, 1), 120, scale=6)
    assert adder(runtime)([late], now=NOW) == ["a"]
    _, _, balance = runtime.queries.get("acme", ent.id, NOW)  # GET /v1/entitlements/{id}
    assert balance.quantity == Decimal(130)
    live = runtime.balance.live("acme", "cust-1", "api_calls", NOW)
    assert live is not None
    assert [b.quantity for b in live] == [Decimal(130)]
    from_db = runtime.balance.balances("acme", "cust-1", "api_calls", NOW)
    assert [b.quantity for b in from_db] == [Decimal(130)]
    value = runtime.balance.value("acme", "cust-1", "api_calls", NOW)
    assert (value.quantity, value.remaining) == (Decimal(130), Decimal(130))


def test_the_periods_show_what_each_renewed_term_carried(runtime: Runtime) -> None:
    """The usage history (``GET .../periods``'s service): the first term carried
    nothing; Oct 10 carried 50 (Sep 10 was never used); Nov 10 carried 30 after the
    late 120 into Oct 10."""
    from .test_rollover_ingest import adder
    from .test_rollover_ingest import usage as usage_at_scale_0

    ent = backdated(runtime, "50")
    runtime.resolution.refresh([("acme", "cust-1", "api_calls")], NOW)
    late = usage_at_scale_0("cust-1", d(2026, 11, 1), 120, scale=6)
    assert adder(runtime)([late], now=NOW) == ["a"]
    shown = {
        u.period.start: (u.period.quantity, u.rolled_over, u.consumed)
        for u in runtime.queries.periods("acme", ent.id, NOW)
    }
    assert shown[d(2026, 7, 10)] == (Decimal(100), None, Decimal(0))
    assert shown[d(2026, 10, 10)] == (Decimal(150), Decimal(50), Decimal(120))
    assert shown[d(2026, 11, 10)] == (Decimal(130), Decimal(30), Decimal(0))


def test_finalised_carries_bound_the_walk_and_change_no_limit(runtime: Runtime) -> None:
    """Once the term before a period is past the late window and flushed, its carry
    is stored (``RolloverStore.finalise``): the same figure the walk computes, so
    the value read and ingest see the same limits, and the resolution views start
    at the latest stored carry instead of the first term."""
    from meterd.storage.rollover import RolloverStore

    from .test_rollover_ingest import adder
    from .test_rollover_ingest import usage as usage_at_scale_0

    ent = backdated(runtime, "50")
    wanted = [("acme", "cust-1", "api_calls")]
    runtime.resolution.refresh(wanted, NOW)
    late = usage_at_scale_0("cust-1", d(2026, 11, 1), 120, scale=6)
    assert adder(runtime)([late], now=NOW) == ["a"]
    store = RolloverStore(runtime.database.sessions)
    # Oct 10's term before (Sep 10) is final; Oct 10 itself is not (late events)
    assert store.finalise(d(2026, 10, 10), now=NOW, job_run_id="t").entitlements == 1
    assert (
        store.finalise(d(2026, 10, 10), now=NOW, job_run_id="t").entitlements == 0
    )  # done: nothing left to store
    stored = {p.period_start: p.rolled_over for p in runtime.usage.periods_of(ent.id)}
    assert stored == {d(2026, 7, 10): None, d(2026, 10, 10): Decimal(50), d(2026, 11, 10): None}
    assert starts(runtime)[0] == d(2026, 10, 10)  # the chain stops at the stored carry
    runtime.resolution.refresh(wanted, NOW)
    assert [b.quantity for b in runtime.balance.current("acme", "cust-1", "api_calls", NOW)] == [
        Decimal(130)
    ]
    assert [b.quantity for b in runtime.balance.balances("acme", "cust-1", "api_calls", NOW)] == [
        Decimal(130)
    ]
    add = adder(runtime)
    usage = [usage_at_scale_0("cust-1", NOW, n, scale=6) for n in (131, 130)]
    assert add([usage[0]], now=NOW, strict=True) == ["x"]
    assert add([usage[1]], now=NOW, strict=True) == ["a"]
    # flushed, and the Oct 10 term past the window: Nov 10 stores 100 + ... - 100 = 30
    runtime.flush.flush_all(NOW)
    assert store.finalise(d(2026, 11, 10), now=NOW, job_run_id="t").entitlements == 1
    stored = {p.period_start: p.rolled_over for p in runtime.usage.periods_of(ent.id)}
    assert stored[d(2026, 11, 10)] == Decimal(30)
    runtime.resolution.refresh(wanted, NOW)
    assert [b.quantity for b in runtime.balance.current("acme", "cust-1", "api_calls", NOW)] == [
        Decimal(130)
    ]
    assert add([usage_at_scale_0("cust-1", NOW, 1, scale=6)], now=NOW, strict=True) == ["x"]
