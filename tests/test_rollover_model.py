"""Rollover's arithmetic (meterd.core.rollover) against a reference model written
from the contract's words, and its Lua twin (lua/ingest/rollover.lua, run alone
through lupa) against it on random chains of terms: a renewed term's limit is its
renewal quantity plus MIN(rollover_max, MAX(remaining of the term before,
rollover_min)), the remaining being that term's own limit (with its own carry) less
its consumption; late events into old terms change what every later term carries."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.core.rollover import carried, chain_limits, effective_limit, term_limit

from .lua_fragment import Fragment

EXPORTS = ["rollover_carried", "rollover_term_limit", "rollover_effective_limit"]


@pytest.fixture(scope="module")
def lua() -> Fragment:
    return Fragment("ingest/rollover", EXPORTS)


def reference(
    first: int, renewals: list[int], consumed: list[int], rmax: int, rmin: int
) -> list[int]:
    """The contract, term by term, with no shared helper: a term's balance is what
    it was granted (renewal + carry) less what it used; what carries is clamped to
    [rollover_min, rollover_max] (rollover_max wins); unlimited stays unlimited."""
    limits = [first]
    for k, renewal in enumerate(renewals):
        before = limits[-1]
        if renewal == -1:
            limits.append(-1)
            continue
        balance = float("inf") if before == -1 else before - consumed[k]
        carry = min(rmax, max(balance, rmin))
        limits.append(renewal + int(carry))
    return limits


units = st.integers(0, 10**12)
rollovers = st.tuples(units, units).map(lambda t: (t[0], min(t)))  # (max, min <= max)


@st.composite
def chains(draw: st.DrawFn) -> tuple[int, list[int], list[int], int, int]:
    n = draw(st.integers(0, 30))
    first = draw(st.one_of(st.just(-1), units))
    renewals = draw(st.lists(st.one_of(units, st.just(-1)), min_size=n, max_size=n))
    # consumption below, at and far over the limit (overage)
    consumed = draw(st.lists(st.integers(0, 3 * 10**12), min_size=n, max_size=n))
    rmax, rmin = draw(rollovers)
    return first, renewals, consumed, rmax, rmin


@settings(max_examples=500, deadline=None)
@given(chain=chains())
def test_chain_limits_follow_the_reference_model(
    chain: tuple[int, list[int], list[int], int, int],
) -> None:
    first, renewals, consumed, rmax, rmin = chain
    expected = reference(first, renewals, consumed, rmax, rmin)
    assert chain_limits(first, zip(consumed, renewals, strict=True), rmax, rmin) == expected
    assert effective_limit(first, consumed, renewals, rmax, rmin) == expected[-1]


@settings(max_examples=500, deadline=None)
@given(chain=chains())
def test_the_lua_twin_agrees_on_random_chains(
    lua: Fragment, chain: tuple[int, list[int], list[int], int, int]
) -> None:
    first, renewals, consumed, rmax, rmin = chain
    python = effective_limit(first, consumed, renewals, rmax, rmin)
    got = lua.rollover_effective_limit(
        first, lua.to_lua(consumed), lua.to_lua(renewals), rmax, rmin
    )
    assert got == python
    for k, renewal in enumerate(renewals):
        before = chain_limits(first, zip(consumed[:k], renewals[:k], strict=True), rmax, rmin)[-1]
        assert lua.rollover_carried(before, consumed[k], rmax, rmin) == carried(
            before, consumed[k], rmax, rmin
        )
        assert lua.rollover_term_limit(renewal, before, consumed[k], rmax, rmin) == term_limit(
            renewal, before, consumed[k], rmax, rmin
        )


def test_defaults_carry_nothing() -> None:
    assert carried(100, 10, 0, 0) == 0
    assert carried(100, 500, 0, 0) == 0
    assert term_limit(100, 100, 10, 0, 0) == 100


def test_the_carry_is_clamped_both_ways() -> None:
    assert carried(100, 30, 50, 0) == 50  # 70 left, at most 50
    assert carried(100, 80, 50, 0) == 20
    assert carried(100, 100, 50, 10) == 10  # nothing left, at least 10
    assert carried(100, 150, 50, 0) == 0  # overage carries nothing below the minimum
    assert carried(-1, 10**9, 50, 0) == 50  # unlimited before: the most
    assert term_limit(-1, 100, 0, 50, 0) == -1  # unlimited stays unlimited


def test_twenty_four_monthly_renewals_with_late_events_into_old_terms(lua: Fragment) -> None:
    """24 monthly terms of 1000 units, rollover up to 600 (at least 50). Events
    arrive term by term; then late events land in old terms (at most 2 back, the
    late window of a monthly term) and every later term's limit follows them,
    in Python and in Lua alike, and matches the reference model replayed from
    scratch on the final consumptions."""
    rng = random.Random(23)
    rmax, rmin, base = 600, 50, 1000
    consumed = [0] * 24
    for k in range(24):
        for _ in range(rng.randint(0, 5)):
            consumed[k] += rng.randint(0, 400)
        # late events into the two terms before this one
        for back in (1, 2):
            if k - back >= 0 and rng.random() < 0.5:
                consumed[k - back] += rng.randint(0, 300)
        renewals = [base] * k
        limits = chain_limits(base, zip(consumed[:k], renewals, strict=True), rmax, rmin)
        assert limits == reference(base, renewals, consumed[:k], rmax, rmin)
        assert (
            lua.rollover_effective_limit(
                base, lua.to_lua(consumed[:k]), lua.to_lua(renewals), rmax, rmin
            )
            == limits[-1]
        )
    final = chain_limits(base, zip(consumed[:23], [base] * 23, strict=True), rmax, rmin)
    assert all(base + rmin <= limit <= base + rmax for limit in final[1:])
    # A late event into term 21 changes what terms 22 and 23 carry, nothing before.
    before = list(final)
    consumed[21] += 10**6
    after = chain_limits(base, zip(consumed[:23], [base] * 23, strict=True), rmax, rmin)
    assert after[:22] == before[:22]
    assert after[22] == base + rmin
