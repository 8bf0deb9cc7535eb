"""Issue 20, item 4: ingest.lua finds the term Python finds however far back the anchor
is (a 1-DAY term from year 1 is 740,000 terms; both find it in a constant number
of steps). Lua numbers are doubles, exact integers up to 2^53 microseconds (years
1685 to 2255), and instants before 1970 are negative, which Lua once read as
"no end"."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterd.core.events import UsageEvent
from meterd.core.lifecycle import period_at
from meterd.core.redis_keys import period_field
from meterd.core.terms import Term
from meterd.runtime import Runtime
from meterd.storage.counters import ScriptCode
from meterd.storage.resolution import decode_resolution, encode_resolution

from .conftest import NOW
from .test_terms import renewing_view

YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)


def lua_field(rt: Runtime, anchor: datetime, term: Term, moment: datetime) -> tuple[str, str]:
    """(the field ingest.lua counted an event at ``moment`` in, the field of the period
    Python's ``period_at`` gives), for a renewing view anchored at ``anchor`` whose
    only stored period is its first term. The entry is written as the resolution
    cache writes it: at the instant of the event."""
    view = renewing_view(anchor, term, term.start(anchor, 1))
    customer = f"c-{uuid.uuid4().hex[:8]}"
    entry = encode_resolution([view], near=moment)
    rt.counters.store_resolutions([("acme", customer, "api_calls", entry, 60, {})], replace=True)
    usage = UsageEvent(
        org="acme", customer=customer, feature="api_calls", source="t",
        id=uuid.uuid4().hex, time=moment, quantity=Decimal("0.000001"), entitlement_id=None,
    )  # fmt: skip
    assert rt.counters.add_batch([usage], now=moment) == [ScriptCode.ACCEPTED]
    expected = period_at(view, moment)
    assert expected is not None and expected.start <= moment < (expected.end or moment)
    want = period_field(view.id, expected.start)
    counted = [f for f, n in rt.counters.pending_fields().items() if f.startswith(view.id.hex)]
    assert len(counted) == 1
    return counted[0], want


def test_a_daily_term_from_year_one_lands_usage_in_the_current_term(runtime: Runtime) -> None:
    got, want = lua_field(runtime, YEAR_ONE, Term(length=timedelta(days=1)), NOW)
    assert got == want
    assert want.endswith(":" + str(int(datetime(2026, 11, 22, tzinfo=UTC).timestamp() * 10**6)))


def test_a_monthly_term_anchored_on_jan_31_of_year_one_clamps_as_python_does(
    runtime: Runtime,
) -> None:
    anchor = datetime(1, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    got, want = lua_field(runtime, anchor, Term(months=1), NOW)
    assert got == want


def test_a_term_of_an_hour_and_seven_microseconds_from_year_one(runtime: Runtime) -> None:
    got, want = lua_field(runtime, YEAR_ONE, Term(length=timedelta(hours=1, microseconds=7)), NOW)
    assert got == want


far_anchors = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(1700, 1, 1), timezones=st.just(UTC)
)
far_terms = st.one_of(
    st.integers(1, 36).map(lambda m: Term(months=m)),
    st.integers(1, 400).map(lambda n: Term(length=timedelta(days=n))),
    st.integers(3600, 10**7).map(lambda s: Term(length=timedelta(seconds=s, microseconds=7))),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    anchor=far_anchors,
    term=far_terms,
    offset=st.timedeltas(min_value=-timedelta(days=40), max_value=timedelta(days=40)),
)
def test_ingest_lua_finds_the_term_python_finds_for_anchors_before_1700(
    runtime: Runtime, anchor: datetime, term: Term, offset: timedelta
) -> None:
    got, want = lua_field(runtime, anchor, term, NOW + offset)
    assert got == want


def test_a_resolution_entry_keeps_instants_before_1970(runtime: Runtime) -> None:
    """Only -1 means "none": an end in 1900 is not an open end."""
    start = datetime(1900, 1, 1, tzinfo=UTC)
    view = renewing_view(start, Term(length=timedelta(days=1)), start + timedelta(days=1))
    (decoded,) = decode_resolution(encode_resolution([view]))
    assert decoded.periods[0].end == start + timedelta(days=1)
    assert decoded.ends_at == start + timedelta(days=1)
    assert decoded.renewal is not None
    assert decoded.renewal.term.start(decoded.renewal.anchor, 3) == start + timedelta(days=3)
