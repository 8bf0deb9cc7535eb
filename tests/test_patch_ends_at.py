"""Issue 20, item 7: a PATCH that moves ``ends_at`` moves the end of the term's last
period with it (also when it reopens an EXPIRED or GRACE entitlement, when no
period contains the instant of the change), in the database and in the Redis
resolution data, and usage after the old end lands in that period."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from meterd.core.domain import Outcome, Status
from meterd.core.redis_keys import period_field
from meterd.runtime import Runtime
from meterd.services.catalog import EntitlementChange
from meterd.storage.models import Entitlement
from meterd.testing import event

from .conftest import NOW
from .helpers import grant

START = NOW - timedelta(days=30)
OLD_END = NOW - timedelta(days=2)
NEW_END = NOW + timedelta(days=10)


def move_end(rt: Runtime, ent: Entitlement, end: datetime) -> Entitlement:
    change = EntitlementChange(row_version=ent.row_version, ends_at=end)
    rt.catalog.update_entitlement("acme", ent.id, change, NOW)
    return rt.entitlements.get(ent.id)


def period_bounds(rt: Runtime, ent: Entitlement) -> list[tuple[datetime, datetime | None]]:
    return [(p.period_start, p.period_end) for p in rt.usage.periods_of(ent.id)]


def assert_reopened_until_the_new_end(rt: Runtime, ent: Entitlement) -> None:
    """Stored, cached and counted: one period from START to NEW_END, and usage after
    the old end counts in it."""
    assert ent.status == Status.ACTIVE and ent.ends_at == NEW_END
    assert period_bounds(rt, ent) == [(START, NEW_END)]
    (cached,) = rt.balance.live("acme", "cust-1", "api_calls", NOW) or []
    (stored,) = rt.balance.balances("acme", "cust-1", "api_calls", NOW)
    assert (cached.period_start, cached.period_end) == (START, NEW_END)
    assert (stored.period_start, stored.period_end) == (START, NEW_END)
    assert cached.status is stored.status is Status.ACTIVE

    after_old_end = OLD_END + timedelta(days=1)
    report = rt.ingest.ingest([event(time=after_old_end, quantity="3")], now=NOW)
    assert report.outcomes == [Outcome.ACCEPTED]
    field = period_field(ent.id, START)
    assert rt.counters.live_totals("acme", "cust-1", [field]) == {field: 3_000_000}
    rt.flush.flush_all(NOW)
    assert [(p.period_start, p.period_end, p.consumed) for p in rt.usage.periods_of(ent.id)] == [
        (START, NEW_END, Decimal(3))
    ]


def test_reopening_an_expired_entitlement_moves_its_period_end(runtime: Runtime) -> None:
    ent = grant(runtime, starts_at=START, ends_at=OLD_END)
    assert ent.status == Status.EXPIRED
    assert_reopened_until_the_new_end(runtime, move_end(runtime, ent, NEW_END))


def test_reopening_an_entitlement_in_grace_moves_its_period_end(runtime: Runtime) -> None:
    ent = grant(runtime, starts_at=START, ends_at=OLD_END, grace=timedelta(days=5))
    assert ent.status == Status.GRACE
    reopened = move_end(runtime, ent, NEW_END)
    assert reopened.grace_until == NEW_END + timedelta(days=5)
    assert_reopened_until_the_new_end(runtime, reopened)


def test_ending_a_reopened_entitlement_again_moves_its_period_end_back(runtime: Runtime) -> None:
    ent = move_end(runtime, grant(runtime, starts_at=START, ends_at=OLD_END), NEW_END)
    ended = move_end(runtime, ent, NOW - timedelta(days=1))
    assert period_bounds(runtime, ended) == [(START, NOW - timedelta(days=1))]
    assert ended.status == Status.EXPIRED
