"""The effective limit of a renewed term, walked back along the terms to one whose
limit is final (meterd.core.lifecycle.limit_units), agrees with its Lua twin
(lua/ingest/rollover.lua ``rolled_limit``, run alone through lupa on the entry
storage/resolution.py writes) on random layouts: stored and calendar-only terms,
stored final carries, resets off the calendar, unlimited terms, terms of months and
of days; and with the contract's reference model across 24 monthly renewals whose
old terms take late events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.core.domain import BillingType, EntitlementView, Period, Renewal, Status
from meterd.core.lifecycle import limit_units, period_at
from meterd.core.redis_keys import period_field
from meterd.core.terms import Term
from meterd.core.timeutil import epoch_micros
from meterd.storage.resolution import decode_view, encode_view

from .lua_fragment import Fragment
from .test_rollover_model import reference

ANCHOR = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def lua() -> Fragment:
    return Fragment("ingest/rollover", ["rolled_limit"])


def view_of(
    term: Term,
    periods: list[Period],
    renewal_quantity: Decimal | None,
    rmax: int,
    rmin: int,
    ent_id: uuid.UUID | None = None,
) -> EntitlementView:
    return EntitlementView(
        id=ent_id or uuid.uuid4(),
        number=1,
        priority=0,
        status=Status.ACTIVE,
        billing_type=BillingType.PRE_PAID,
        quantity=periods[0].quantity,
        starts_at=ANCHOR,
        ends_at=term.start(ANCHOR, 1),
        grace_until=None,
        periods=tuple(periods),
        renewal=Renewal(ANCHOR, term, renewal_quantity, Decimal(rmax), Decimal(rmin)),
        scale=0,
    )


#: Unlimited one time in ten (it ends a walk: nothing to carry through).
quantities = st.tuples(st.integers(0, 9), st.integers(0, 1000)).map(
    lambda t: None if t[0] == 0 else Decimal(t[1])
)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[EntitlementView, dict[str, int], int]:
    term = draw(st.sampled_from([Term(months=1), Term(months=3), Term(length=10 * DAY)]))
    n = draw(st.integers(1, 14))
    renewal_quantity = draw(quantities)
    periods: list[Period] = []
    for k in range(n):
        start, end = term.start(ANCHOR, k), term.start(ANCHOR, k + 1)
        if k > 0 and not draw(st.integers(0, 9)) < 6:
            continue  # a calendar-only term (never stored: period_at reads the calendar)
        quantity = draw(quantities) if k == 0 else renewal_quantity
        rolled = None
        if k > 0 and draw(st.integers(0, 9)) < 2:
            rolled = Decimal(draw(st.integers(0, 500)))
        if draw(st.integers(0, 9)) < 2:  # a reset: a fresh period from mid-term
            mid = start + (end - start) / 2
            periods.append(Period(start, mid, quantity, rolled))
            periods.append(Period(mid, end, draw(quantities)))
        else:
            periods.append(Period(start, end, quantity, rolled))
    rmax = draw(st.integers(0, 600))
    rmin = draw(st.integers(0, rmax))
    view = view_of(term, periods, renewal_quantity, rmax, rmin)
    # consumptions of every term the walk can read, stored or not
    consumed: dict[str, int] = {}
    for k in range(n + 3):
        for moment in (term.start(ANCHOR, k), term.start(ANCHOR, k + 1) - DAY):
            found = period_at(view, moment)
            if found is not None:
                field = period_field(view.id, found.start)
                consumed[field] = draw(st.integers(0, 2000))
    offset = draw(st.integers(0, 10**9))
    return view, consumed, offset


def both(
    lua: Fragment, view: EntitlementView, consumed: dict[str, int], moment: datetime
) -> tuple[tuple[str, int], tuple[str, int]]:
    period = period_at(view, moment)
    assert period is not None
    python = limit_units(view, period, lambda p: consumed.get(period_field(view.id, p.start), 0))
    entry = lua.to_lua(json.loads(json.dumps(encode_view(view, near=moment))))
    field, limit, prepaid, _ = lua.rolled_limit(
        entry, epoch_micros(moment), None, lambda f: consumed.get(f, 0)
    )
    assert prepaid is True
    return (period_field(view.id, period.start), python), (field, int(limit))


@settings(max_examples=400, deadline=None)
@given(layout=layouts())
def test_the_lua_walk_agrees_with_python_on_random_layouts(
    lua: Fragment, layout: tuple[EntitlementView, dict[str, int], int]
) -> None:
    view, consumed, offset = layout
    renewal = view.renewal
    assert renewal is not None
    horizon = renewal.term.start(ANCHOR, 16) - ANCHOR
    moment = ANCHOR + horizon * (offset / 10**9)
    python, lua_answer = both(lua, view, consumed, moment)
    assert lua_answer == python


@settings(max_examples=200, deadline=None)
@given(layout=layouts())
def test_the_entry_decodes_back_to_the_same_rollover(
    layout: tuple[EntitlementView, dict[str, int], int],
) -> None:
    view, consumed, _ = layout
    back = decode_view(encode_view(view))
    assert back.renewal is not None and view.renewal is not None
    assert (back.renewal.rollover_max, back.renewal.rollover_min) == (
        view.renewal.rollover_max,
        view.renewal.rollover_min,
    )
    if view.renewal.rolls_over:  # else the stored carries are not written: nothing carries
        assert [p.rolled_over for p in back.periods] == [
            p.rolled_over for p in sorted(view.periods, key=lambda p: p.start)
        ]
    for moment in (ANCHOR + k * 11 * DAY for k in range(20)):
        period, again = period_at(view, moment), period_at(back, moment)
        assert period is not None and again is not None

        def of(v: EntitlementView):
            return lambda p: consumed.get(period_field(v.id, p.start), 0)

        assert limit_units(view, period, of(view)) == limit_units(back, again, of(back))


def test_twenty_four_monthly_renewals_with_late_events_follow_the_reference(
    lua: Fragment,
) -> None:
    """Only the first term is stored (as after a catch-up); 24 monthly renewals of
    1000, rollover up to 600, at least 50. Usage comes term by term, and late events
    land in the two terms before; after each, every term's limit (Python and Lua)
    is the reference model's on the consumptions so far."""
    import random

    rng = random.Random(2023)
    term = Term(months=1)
    view = view_of(
        term, [Period(ANCHOR, term.start(ANCHOR, 1), Decimal(1000))], Decimal(1000), 600, 50
    )
    consumed = [0] * 25
    fields = [period_field(view.id, term.start(ANCHOR, k)) for k in range(25)]
    for k in range(25):
        consumed[k] += rng.randint(0, 1400)
        for back in (1, 2):
            if k - back >= 0 and rng.random() < 0.6:
                consumed[k - back] += rng.randint(0, 400)
        by_field = dict(zip(fields, consumed, strict=True))
        expected = reference(1000, [1000] * k, consumed[:k], 600, 50)
        for j in range(k + 1):
            moment = term.start(ANCHOR, j) + timedelta(days=3)
            python, lua_answer = both(lua, view, by_field, moment)
            assert python == lua_answer == (fields[j], expected[j])


def test_a_stored_final_carry_ends_the_walk(lua: Fragment) -> None:
    """Term 3 stores its final carry (120): what terms 0-2 consumed no longer
    matters to terms 3 and later."""
    term = Term(months=1)
    periods = [
        Period(term.start(ANCHOR, k), term.start(ANCHOR, k + 1), Decimal(100), None)
        for k in range(3)
    ] + [Period(term.start(ANCHOR, 3), term.start(ANCHOR, 4), Decimal(100), Decimal(120))]
    view = view_of(term, periods, Decimal(100), 500, 0)
    fields = [period_field(view.id, term.start(ANCHOR, k)) for k in range(6)]
    for early in (0, 50, 10**6):
        consumed = {fields[0]: early, fields[1]: early, fields[2]: early, fields[3]: 200}
        moment = term.start(ANCHOR, 4) + DAY
        python, lua_answer = both(lua, view, consumed, moment)
        # term 3: 100 + 120 = 220, used 200: 20 carries into term 4
        assert python == lua_answer == (fields[4], 120)
