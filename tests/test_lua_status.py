"""ingest/status.lua and ingest/periods.lua, run alone through lupa on the resolution
entry storage/resolution.py writes, agree with meterd.lifecycle: an entitlement takes
usage timed at an instant exactly when ``usable_at`` says so, one that refuses it as
suspended is SUSPENDED for ``status_at``, and the period it is counted in is
``period_at``'s."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.core.domain import BillingType, EntitlementView, Period, Renewal, Status
from meterd.core.lifecycle import period_at, status_at, usable_at
from meterd.core.redis_keys import period_field
from meterd.core.terms import Term
from meterd.core.timeutil import epoch_micros, month_start
from meterd.storage.resolution import encode_view

from .lua_fragment import Fragment

BASE = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def lua() -> Fragment:
    return Fragment("ingest/status", ["in_window", "suspended_at"])


@pytest.fixture(scope="module")
def periods() -> Fragment:
    return Fragment("ingest/periods", ["period_of"])


offsets = st.integers(-200, 800).map(lambda d: BASE + d * DAY / 4)


@st.composite
def views(draw: st.DrawFn) -> EntitlementView:
    starts = draw(offsets)
    renews = draw(st.booleans())
    term = draw(st.sampled_from([Term(months=1), Term(months=3), Term(length=10 * DAY)]))
    ends = (
        term.start(starts, 1)
        if renews
        else draw(st.none() | st.integers(1, 400).map(lambda d: starts + d * DAY / 4))
    )
    grace = None
    if ends is not None and not renews and draw(st.booleans()):
        grace = ends + draw(st.integers(0, 40)) * DAY
    suspensions = []
    for _ in range(draw(st.integers(0, 2))):
        start = draw(offsets)
        days = draw(st.none() | st.integers(1, 60))
        suspensions.append((start, None if days is None else start + days * DAY))
    terminated = draw(st.none() | offsets)
    billing = draw(
        st.sampled_from([BillingType.PRE_PAID, BillingType.PRE_PAID, BillingType.PAY_PER_USE])
    )
    quantity = Decimal(draw(st.integers(0, 100)))
    first = Period(starts, ends, quantity)
    return EntitlementView(
        id=uuid.uuid4(),
        number=1,
        priority=0,
        status=Status.ACTIVE,
        billing_type=billing,
        quantity=quantity,
        starts_at=starts,
        ends_at=ends,
        grace_until=grace,
        periods=(first,),
        renewal=Renewal(starts, term, quantity) if renews else None,
        suspensions=tuple(suspensions),
        terminated_at=terminated,
        scale=0,
    )


@settings(max_examples=500, deadline=None)
@given(view=views(), moment=offsets)
def test_taking_usage_agrees_with_usable_at(
    lua: Fragment, view: EntitlementView, moment: datetime
) -> None:
    entry = lua.to_lua(encode_view(view, near=moment))
    ts = epoch_micros(moment)
    in_window = bool(lua.in_window(entry, ts))
    suspended = bool(lua.suspended_at(entry, ts))
    assert (in_window and not suspended) == usable_at(view, moment)
    if in_window and suspended:
        assert status_at(view, moment) is Status.SUSPENDED


@settings(max_examples=500, deadline=None)
@given(view=views(), moment=offsets)
def test_the_period_counted_in_is_period_at(
    periods: Fragment, view: EntitlementView, moment: datetime
) -> None:
    if not usable_at(view, moment):
        return  # ingest asks for a period only where the entitlement takes usage
    entry = periods.to_lua(encode_view(view, near=moment))
    month = epoch_micros(month_start(moment))
    field, limit, prepaid, _ = periods.period_of(entry, epoch_micros(moment), str(month))
    expected = period_at(view, moment)
    if view.billing_type is BillingType.PAY_PER_USE:
        assert (field, prepaid) == (f"{view.id.hex}:{month}", False)
        return
    assert expected is not None and field is not None
    assert field == period_field(view.id, expected.start)
    assert prepaid is True
    assert limit == (-1 if expected.quantity is None else int(expected.quantity))
