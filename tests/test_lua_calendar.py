"""ingest/calendar.lua, run alone through lupa, agrees with meterd.core.terms: month
arithmetic (month ends, leap years), term boundaries and the term containing an
instant, for anchors from year 1 on and instants across what Lua's doubles hold
exactly (years 1685 to 2255)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.core.terms import Term, add_months
from meterd.core.timeutil import epoch_micros

from .lua_fragment import Fragment

DAY_US = 86_400_000_000
EXPORTS = [
    "civil_from_days",
    "days_from_civil",
    "days_in_month",
    "add_months",
    "term_start",
    "term_index",
]

#: Instants an event can carry: Lua's doubles hold their microseconds exactly.
EXACT_FROM, EXACT_TO = datetime(1700, 1, 1, tzinfo=UTC), datetime(2250, 12, 31, tzinfo=UTC)


@pytest.fixture(scope="module")
def calendar() -> Fragment:
    return Fragment("ingest/calendar", EXPORTS)


def _month_ends(draw_from: datetime, draw_to: datetime) -> st.SearchStrategy[datetime]:
    """Instants on the last days of months (28 to 31), where clamping happens."""
    return st.builds(
        lambda y, m, back, us: (
            datetime(y, m, 1, tzinfo=UTC)
            + timedelta(days=31)
            - timedelta(days=(datetime(y, m, 1) + timedelta(days=31)).day + back, microseconds=-us)
        ),
        st.integers(draw_from.year + 1, draw_to.year - 1),
        st.integers(1, 12),
        st.integers(0, 3),
        st.integers(0, DAY_US - 1),
    )


def instants(lo: datetime = EXACT_FROM, hi: datetime = EXACT_TO) -> st.SearchStrategy[datetime]:
    plain = st.datetimes(
        min_value=lo.replace(tzinfo=None), max_value=hi.replace(tzinfo=None), timezones=st.just(UTC)
    )
    return st.one_of(plain, _month_ends(lo, hi))


OLD = datetime(1, 1, 1, tzinfo=UTC)
anchors = st.one_of(instants(), instants(OLD + timedelta(days=40), EXACT_FROM))
terms = st.one_of(
    st.integers(1, 36).map(lambda m: Term(months=m)),
    st.integers(1, 400).map(lambda n: Term(length=timedelta(days=n))),
    st.integers(1, 10**7).map(lambda s: Term(length=timedelta(seconds=s, microseconds=7))),
)


def lua_renewal(calendar: Fragment, anchor: datetime, term: Term, moment: datetime) -> object:
    """The renewal as storage/resolution.py writes it (a term of days is anchored on
    the boundary at or before the instant judged, near the present)."""
    if term.months:
        us = epoch_micros(anchor)
        day, time_of_day = divmod(us, DAY_US)
        return calendar.to_lua(["m", term.months, us, 0, day, time_of_day])
    rebased = term.start(anchor, term.index_at(anchor, moment))
    return calendar.to_lua(
        ["d", term.length // timedelta(microseconds=1), epoch_micros(rebased), 0]
    )


@settings(max_examples=400, deadline=None)
@given(day=st.integers(date(1, 1, 1).toordinal(), date(9999, 12, 31).toordinal()))
def test_days_and_civil_dates_agree_with_python(calendar: Fragment, day: int) -> None:
    d = date.fromordinal(day)
    days = day - date(1970, 1, 1).toordinal()
    assert tuple(calendar.civil_from_days(days)) == (d.year, d.month, d.day)
    assert calendar.days_from_civil(d.year, d.month, d.day) == days


@pytest.mark.parametrize("year", [1600, 1700, 1900, 1970, 2000, 2023, 2024, 2100, 2400])
def test_days_in_february_follow_the_gregorian_leap_years(calendar: Fragment, year: int) -> None:
    expected = (date(year, 3, 1) - date(year, 2, 1)).days
    assert calendar.days_in_month(year, 2) == expected


@settings(max_examples=400, deadline=None)
@given(moment=instants(), months=st.integers(-36, 120))
def test_adding_months_clamps_to_the_month_end_as_terms_does(
    calendar: Fragment, moment: datetime, months: int
) -> None:
    expected = add_months(moment, months)
    if EXACT_FROM <= expected <= EXACT_TO:
        assert calendar.add_months(epoch_micros(moment), months) == epoch_micros(expected)


@settings(max_examples=400, deadline=None)
@given(anchor=anchors, term=terms, moment=instants())
def test_the_term_containing_an_instant_and_its_bounds_agree_with_terms(
    calendar: Fragment, anchor: datetime, term: Term, moment: datetime
) -> None:
    if moment < anchor:
        return
    r = lua_renewal(calendar, anchor, term, moment)
    k = calendar.term_index(r, epoch_micros(moment))
    start, end = calendar.term_start(r, k), calendar.term_start(r, k + 1)
    assert start <= epoch_micros(moment) < end
    python_k = term.index_at(anchor, moment)
    assert start == epoch_micros(term.start(anchor, python_k))
    assert end == epoch_micros(term.start(anchor, python_k + 1))
    if term.months:
        assert k == python_k


@pytest.mark.parametrize(
    ("anchor", "months", "moment", "start", "end"),
    [
        ("2024-01-31", 1, "2024-02-29T12:00", "2024-02-29", "2024-03-31"),
        ("2023-01-31", 1, "2023-02-28T23:59", "2023-02-28", "2023-03-31"),
        ("2020-02-29", 12, "2021-03-01", "2021-02-28", "2022-02-28"),
        ("0001-01-31", 1, "2026-02-28T00:00", "2026-02-28", "2026-03-31"),
        ("1900-03-31", 3, "2026-07-01", "2026-06-30", "2026-09-30"),
    ],
)
def test_month_end_and_old_anchors(
    calendar: Fragment, anchor: str, months: int, moment: str, start: str, end: str
) -> None:
    def at(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    term = Term(months=months)
    r = lua_renewal(calendar, at(anchor), term, at(moment))
    k = calendar.term_index(r, epoch_micros(at(moment)))
    assert calendar.term_start(r, k) == epoch_micros(at(start))
    assert calendar.term_start(r, k + 1) == epoch_micros(at(end))
    assert term.end_after(at(anchor), at(moment)) == at(end)
