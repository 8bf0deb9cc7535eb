"""Terms on the calendar: boundaries from the anchor, clamped to month end, never drifting;
and ingest.lua's arithmetic agrees with Python's on every boundary."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterd.core.domain import BillingType, EntitlementView, Period, Renewal, Status
from meterd.core.events import UsageEvent
from meterd.core.lifecycle import period_at
from meterd.core.redis_keys import period_field
from meterd.core.terms import Term, TermUnit, add_months
from meterd.runtime import Runtime
from meterd.storage.counters import ScriptCode
from meterd.storage.resolution import encode_resolution


def d(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def boundaries(anchor: datetime, term: Term, n: int) -> list[datetime]:
    return [term.start(anchor, k) for k in range(n)]


def test_a_monthly_term_from_jan_31_clamps_to_each_month_end_and_comes_back() -> None:
    got = boundaries(d(2027, 1, 31), Term.of(1, TermUnit.MONTH), 7)
    assert got == [
        d(2027, 1, 31), d(2027, 2, 28), d(2027, 3, 31), d(2027, 4, 30),
        d(2027, 5, 31), d(2027, 6, 30), d(2027, 7, 31),
    ]  # fmt: skip


def test_a_monthly_term_from_jan_31_has_feb_29_in_a_leap_year() -> None:
    assert Term.of(1, TermUnit.MONTH).start(d(2028, 1, 31), 1) == d(2028, 2, 29)


def test_a_monthly_term_from_the_first_never_drifts_over_ten_years() -> None:
    got = boundaries(d(2027, 1, 1, 9), Term.of(1, TermUnit.MONTH), 121)
    assert all(b.day == 1 and b.hour == 9 for b in got)
    assert got[-1] == d(2037, 1, 1, 9)


def test_a_yearly_term_from_feb_29_is_feb_28_until_the_next_leap_year() -> None:
    got = boundaries(d(2028, 2, 29), Term.of(1, TermUnit.YEAR), 10)
    assert [(b.month, b.day) for b in got] == [
        (2, 29), (2, 28), (2, 28), (2, 28), (2, 29), (2, 28), (2, 28), (2, 28), (2, 29), (2, 28),
    ]  # fmt: skip


def test_a_quarterly_term_from_nov_30_over_ten_years() -> None:
    got = boundaries(d(2026, 11, 30), Term.of(3, TermUnit.MONTH), 41)
    assert got[:5] == [d(2026, 11, 30), d(2027, 2, 28), d(2027, 5, 30), d(2027, 8, 30),
                       d(2027, 11, 30)]  # fmt: skip
    assert got[-1] == d(2036, 11, 30)


def test_weeks_and_days_are_durations() -> None:
    assert boundaries(d(2027, 2, 26), Term.of(1, TermUnit.WEEK), 3) == [
        d(2027, 2, 26), d(2027, 3, 5), d(2027, 3, 12),
    ]  # fmt: skip
    assert Term.of(30, TermUnit.DAY).start(d(2027, 1, 31), 12) == d(2027, 1, 31) + timedelta(
        days=360
    )


def test_the_term_index_finds_the_term_containing_an_instant() -> None:
    term, anchor = Term.of(1, TermUnit.MONTH), d(2027, 1, 31)
    assert term.index_at(anchor, d(2027, 2, 27, 23)) == 0
    assert term.index_at(anchor, d(2027, 2, 28)) == 1
    assert term.index_at(anchor, d(2027, 3, 30)) == 1
    assert term.index_at(anchor, d(2027, 3, 31)) == 2
    assert term.end_after(anchor, d(2027, 3, 28)) == d(2027, 3, 31)


@pytest.mark.parametrize(
    ("start", "end", "term"),
    [
        (d(2027, 1, 1), d(2027, 2, 1), Term(months=1)),
        (d(2027, 1, 31), d(2027, 2, 28), Term(months=1)),
        (d(2027, 1, 1), d(2028, 1, 1), Term(months=12)),
        (d(2027, 1, 1), d(2027, 1, 20), Term(length=timedelta(days=19))),
        (d(2027, 1, 1), d(2027, 1, 1) + timedelta(seconds=8), Term(length=timedelta(seconds=8))),
    ],
)
def test_a_term_between_two_instants_is_whole_months_when_it_is_one(
    start: datetime, end: datetime, term: Term
) -> None:
    assert Term.between(start, end) == term


instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(anchor=instants, months=st.integers(1, 24), k=st.integers(-50, 200))
def test_boundary_k_is_the_anchor_plus_k_terms_clamped(
    anchor: datetime, months: int, k: int
) -> None:
    term = Term(months=months)
    assert term.start(anchor, k) == add_months(anchor, k * months)
    assert term.index_at(anchor, term.start(anchor, k)) == k


def renewing_view(anchor: datetime, term: Term, first_end: datetime) -> EntitlementView:
    return EntitlementView(
        id=uuid.uuid4(),
        number=1,
        priority=0,
        status=Status.ACTIVE,
        billing_type=BillingType.PRE_PAID,
        quantity=None,
        starts_at=anchor,
        ends_at=first_end,
        grace_until=None,
        periods=(Period(anchor, first_end, None),),
        renewal=Renewal(anchor, term, None),
    )


terms = st.one_of(
    st.integers(1, 36).map(lambda m: Term(months=m)),
    st.integers(1, 400).map(lambda n: Term(length=timedelta(days=n))),
    st.integers(1, 10**7).map(lambda s: Term(length=timedelta(seconds=s, microseconds=7))),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    anchor=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
    ),
    term=terms,
    later=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3000)),
)
def test_ingest_lua_lands_usage_in_the_term_python_computes(
    runtime: Runtime, anchor: datetime, term: Term, later: timedelta
) -> None:
    """The Lua calendar (epoch microseconds, civil-date algorithms) and meterd.core.terms
    put every instant in the same term: the count lands in the field Python names."""
    view = renewing_view(anchor, term, term.start(anchor, 1))
    moment = anchor + later
    customer = f"c-{uuid.uuid4().hex[:8]}"
    runtime.counters.store_resolutions(
        [("acme", customer, "api_calls", encode_resolution([view]), 60, {})], replace=True
    )
    usage = UsageEvent(
        org="acme", customer=customer, feature="api_calls", source="t",
        id=uuid.uuid4().hex, time=moment, quantity=Decimal("0.000001"), entitlement_id=None,
    )  # fmt: skip
    # Judged "now" = the event time, so it is never late or in the future.
    assert runtime.counters.add_batch([usage], now=moment) == [ScriptCode.ACCEPTED]
    expected = period_at(view, moment)
    assert expected is not None and expected.start <= moment < (expected.end or moment)
    field = period_field(view.id, expected.start)
    assert runtime.counters.live_totals("acme", customer, [field]) == {field: 1}


def test_a_drifted_period_joins_the_calendar_at_its_next_renewal() -> None:
    """Periods stored before terms were on the calendar (28-day "months"): the next
    term starts where they end and ends on the calendar again."""
    anchor, term = d(2027, 1, 31), Term(months=1)
    view = renewing_view(anchor, term, d(2027, 2, 28))
    drifted = (*view.periods, Period(d(2027, 2, 28), d(2027, 3, 28), Decimal(5)))
    view = replace(view, periods=drifted)
    assert period_at(view, d(2027, 3, 29)) == Period(d(2027, 3, 28), d(2027, 3, 31), None)
    assert period_at(view, d(2027, 4, 2)) == Period(d(2027, 3, 31), d(2027, 4, 30), None)
