"""MAX and LATEST over grants whose windows differ (one starts or ends within
another's period, or renews while another runs on).

docs/meters.md: a sample is a level shared down the grants live at its time (each
takes up to its limit, the last the rest); each grant's period judges its own
share. MAX keeps the largest share any sample gave the period, LATEST its share of
the latest sample (by time, then id) the period took. The figures are a function
of the events and the grants: never of the order of arrival or of the batching.

``tests/test_aggregation_model.py`` checks the same rules with grants sharing one
window, where they are the period's peak (or latest value) spread down the grants.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterd.core.domain import Aggregation, BillingType, Outcome
from meterd.runtime import Runtime

from .conftest import NOW
from .helpers import grant

# -- a reference model ----------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    limit: int | None
    #: minutes before NOW; None: the default (ten days before, twenty days after)
    start: int | None
    end: int | None

    def takes(self, minutes_ago: int) -> bool:
        after_start = self.start is None or minutes_ago <= self.start
        before_end = self.end is None or minutes_ago > self.end
        return after_start and before_end


@dataclass(frozen=True)
class Sample:
    id: str
    minutes_ago: int
    value: int


def share(value: int, limits: list[int | None], position: int) -> int:
    """What the grant at ``position`` takes of a level spread down ``limits``."""
    left = value
    for limit in limits[:position]:
        if limit is None or limit >= left:
            return 0
        left -= limit
    limit = limits[position]
    last = position == len(limits) - 1
    return left if last or limit is None else min(left, limit)


def reference(aggregation: Aggregation, windows: list[Window], samples: list[Sample]) -> list[int]:
    """Each grant's figure: its shares of the samples it took (first delivery of each
    id), the largest (MAX) or that of the latest by time then id (LATEST)."""
    first: dict[str, Sample] = {}
    for sample in samples:
        first.setdefault(sample.id, sample)
    taken: list[list[tuple[Sample, int]]] = [[] for _ in windows]
    for sample in first.values():
        live = [i for i, w in enumerate(windows) if w.takes(sample.minutes_ago)]
        limits = [windows[i].limit for i in live]
        for position, i in enumerate(live):
            taken[i].append((sample, share(sample.value, limits, position)))
    figures = []
    for shares in taken:
        if not shares:
            figures.append(0)
        elif aggregation is Aggregation.MAX:
            figures.append(max(s for _, s in shares))
        else:
            figures.append(max(shares, key=lambda t: (-t[0].minutes_ago, t[0].id))[1])
    return figures


# -- the real thing -----------------------------------------------------------------


def _feature(rt: Runtime, aggregation: Aggregation | str) -> str:
    key = f"g{uuid.uuid4().hex[:10]}"
    rt.catalog.create_feature(
        "acme",
        key,
        now=NOW - timedelta(days=365),  # before every event (a meter starts at its creation)
        scale=0,
        aggregation=aggregation,
        event_type="gauge.sample",
        value_property="v",
    )
    return key


def _sample(customer: str, v: int, event_id: str, minutes_ago: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "gauge",
        "type": "gauge.sample",
        "subject": customer,
        "org": "acme",
        "time": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "data": {"v": v},
    }


def _grant_window(rt: Runtime, customer: str, feature: str, w: Window, position: int) -> Any:
    starts = NOW - timedelta(days=10) if w.start is None else NOW - timedelta(minutes=w.start)
    ends = NOW + timedelta(days=20) if w.end is None else NOW - timedelta(minutes=w.end)
    return grant(
        rt,
        customer,
        None if w.limit is None else str(w.limit),
        feature=feature,
        priority=position,
        starts_at=starts,
        ends_at=ends,
    )


def _live(rt: Runtime, customer: str, feature: str, ents: list[Any]) -> list[Decimal]:
    live = {
        b.entitlement_id: b.consumed for b in rt.balance.current("acme", customer, feature, NOW)
    }
    return [live.get(e.id, Decimal(0)) for e in ents]


def _stored(rt: Runtime, ents: list[Any]) -> list[Decimal]:
    return [sum((p.consumed for p in rt.usage.periods_of(e.id)), Decimal(0)) for e in ents]


@st.composite
def windows(draw: st.DrawFn) -> Window:
    limit = draw(st.one_of(st.none(), st.integers(0, 40)))
    start = draw(st.one_of(st.none(), st.integers(1, 600)))
    end = draw(st.one_of(st.none(), st.integers(0, 599)))
    if start is not None and end is not None and end >= start:
        start, end = end + 1, start  # it ends after it starts
    return Window(limit, start, end)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    aggregation=st.sampled_from([Aggregation.MAX, Aggregation.LATEST]),
    grants=st.lists(windows(), min_size=1, max_size=3),
    sent=st.lists(
        st.builds(
            Sample,
            id=st.sampled_from([f"e{i}" for i in range(6)]),
            minutes_ago=st.integers(0, 600),
            value=st.integers(0, 60),
        ),
        min_size=1,
        max_size=16,
    ),
    order=st.randoms(use_true_random=False),
    cuts=st.lists(st.integers(1, 15), max_size=3),
)
def test_levels_across_windows_match_the_model_in_any_order(
    runtime: Runtime,
    aggregation: Aggregation,
    grants: list[Window],
    sent: list[Sample],
    order: Any,
    cuts: list[int],
) -> None:
    firsts: dict[str, Sample] = {}
    deliveries = [firsts.setdefault(s.id, s) for s in sent]
    shuffled = list(deliveries)
    order.shuffle(shuffled)
    feature = _feature(runtime, aggregation)
    expected = [Decimal(v) for v in reference(aggregation, grants, deliveries)]
    # as sent, one event a batch; shuffled, in batches cut at ``cuts``
    bounds = sorted({0, len(shuffled), *(c for c in cuts if c < len(shuffled))})
    for batches in (
        [[s] for s in deliveries],
        [shuffled[a:b] for a, b in itertools.pairwise(bounds)],
    ):
        customer = f"c-{uuid.uuid4().hex[:12]}"
        ents = [_grant_window(runtime, customer, feature, w, i) for i, w in enumerate(grants)]
        for batch in batches:
            payloads = [
                _sample(customer, s.value, f"{customer}-{s.id}", s.minutes_ago) for s in batch
            ]
            runtime.ingest.ingest(payloads, now=NOW)
        assert _live(runtime, customer, feature, ents) == expected
        runtime.flush.flush_all(NOW)
        assert _stored(runtime, ents) == expected


# -- the cases that showed it --------------------------------------------------------


def _two_orders(
    rt: Runtime,
    aggregation: str,
    setup: Any,
    first: tuple[int, str, int],
    second: tuple[int, str, int],
) -> tuple[list[Decimal], list[Decimal]]:
    """The same two samples, delivered in both orders to two identical customers."""
    feature = _feature(rt, aggregation)
    results = []
    for order in ((first, second), (second, first)):
        customer = f"c-{uuid.uuid4().hex[:8]}"
        ents = setup(customer, feature)
        for v, event_id, minutes_ago in order:
            payload = _sample(customer, v, f"{customer}-{event_id}", minutes_ago)
            outcomes = rt.ingest.ingest([payload], now=NOW).outcomes
            assert outcomes == [Outcome.ACCEPTED]
        results.append(_live(rt, customer, feature, ents))
    return results[0], results[1]


def test_max_over_a_grant_starting_mid_period_does_not_depend_on_arrival_order(
    runtime: Runtime,
) -> None:
    """A (limit 10) all along; B starts an hour ago. 25 half an hour ago (A and B
    take it: 10 + 15) and 30 two hours ago (A alone takes it whole). A's period
    peaked at 30, B's share at 15, whichever came first (the sum of shares was once
    compared with each sample, which counted 30 + 15 or 30 + 0 by arrival)."""

    def setup(customer: str, feature: str) -> list[Any]:
        a = grant(runtime, customer, "10", feature=feature, priority=0)
        b = grant(
            runtime, customer, "50", feature=feature, priority=1,
            starts_at=NOW - timedelta(hours=1),
        )  # fmt: skip
        return [a, b]

    in_order, reversed_order = _two_orders(runtime, "MAX", setup, (25, "x", 30), (30, "y", 120))
    assert in_order == reversed_order == [Decimal(30), Decimal(15)]


def test_a_max_share_never_falls_below_a_sample_the_grant_took_alone(runtime: Runtime) -> None:
    """A (limit 10) ended an hour ago; B (limit 50) runs on. 25 half an hour ago lands
    on B alone (B = 25). An older sample of 30 (A and B: 10 + 20) raises A to 10 and
    leaves B at 25: a MAX share never falls."""
    feature = _feature(runtime, "MAX")
    customer = "c-max-fall"
    a = grant(
        runtime, customer, "10", feature=feature, priority=0, ends_at=NOW - timedelta(hours=1)
    )
    b = grant(runtime, customer, "50", feature=feature, priority=1)
    runtime.ingest.ingest([_sample(customer, 25, "x", 30)], now=NOW)
    assert _live(runtime, customer, feature, [a, b]) == [Decimal(0), Decimal(25)]
    runtime.ingest.ingest([_sample(customer, 30, "y", 120)], now=NOW)
    assert _live(runtime, customer, feature, [a, b]) == [Decimal(10), Decimal(25)]


def test_latest_over_a_grant_ending_mid_period_does_not_depend_on_arrival_order(
    runtime: Runtime,
) -> None:
    """A (limit 10) ended an hour ago; B (limit 50) runs on. 30 two hours ago (A and
    B take it: 10 + 20), 5 half an hour ago (B alone). A keeps 10, the share of its
    period's latest sample, even when that sample arrives after B saw a newer one."""

    def setup(customer: str, feature: str) -> list[Any]:
        a = grant(
            runtime, customer, "10", feature=feature, priority=0,
            ends_at=NOW - timedelta(hours=1),
        )  # fmt: skip
        b = grant(runtime, customer, "50", feature=feature, priority=1)
        return [a, b]

    in_order, reversed_order = _two_orders(runtime, "LATEST", setup, (30, "y", 120), (5, "x", 30))
    assert in_order == [Decimal(10), Decimal(5)]
    assert reversed_order == in_order


def _renewing_and_long(rt: Runtime, customer: str, feature: str) -> Any:
    """A renews monthly from Oct 1 (limit 10, burned first); B (limit 100) is one
    period from Oct 1 to past NOW (Nov 22)."""
    oct1, nov1 = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    a = grant(
        rt, customer, "10", feature=feature, priority=0,
        starts_at=oct1, ends_at=nov1, auto_renew=True,
    )  # fmt: skip
    grant(
        rt, customer, "100", feature=feature, priority=1,
        starts_at=oct1, ends_at=NOW + timedelta(days=60),
    )  # fmt: skip
    return a


def _october_of_a(rt: Runtime, aggregation: str, october: int, november: int) -> list[Decimal]:
    """A's October consumption, with samples of Oct 25 and of an hour ago delivered
    in time order and then late October last."""
    feature = _feature(rt, aggregation)
    results = []
    for customer, order in (("time-order", ("oct", "nov")), ("late-oct", ("nov", "oct"))):
        a = _renewing_and_long(rt, customer, feature)
        samples = {"oct": (october, 28 * 24 * 60), "nov": (november, 60)}
        for name in order:
            v, minutes_ago = samples[name]
            payload = _sample(customer, v, f"{customer}-{name}", minutes_ago)
            assert rt.ingest.ingest([payload], now=NOW).outcomes == [Outcome.ACCEPTED]
        rt.flush.flush_all(NOW)
        by_month = {p.period_start.month: p.consumed for p in rt.usage.periods_of(a.id)}
        results.append(by_month[10])
    return results


def test_a_late_latest_sample_that_is_the_latest_of_its_period_is_counted(
    runtime: Runtime,
) -> None:
    """docs: "A late LATEST sample replaces the level only if it is the latest of its
    period." 30 from Oct 25 is the only sample of A's October period; B's one long
    period saw a newer one (5, an hour ago), which once made the script drop the
    late sample for A's October too."""
    assert _october_of_a(runtime, "LATEST", 30, 5) == [Decimal(10), Decimal(10)]


def test_a_late_max_sample_raises_the_peak_of_its_own_period(runtime: Runtime) -> None:
    """docs: "A late MAX sample raises that period's peak if it is higher." A peak of
    50 an hour ago (A's November 10, B 40), then 30 from Oct 25: A's October peak is
    0, so it takes 10 (the script once compared 30 with A's October plus B's whole
    period and moved nothing)."""
    assert _october_of_a(runtime, "MAX", 30, 50) == [Decimal(10), Decimal(10)]


def test_an_older_latest_sample_moves_nothing_and_is_not_refused_near_the_bound(
    runtime: Runtime,
) -> None:
    """The level sits near 2^53 - 1 units; an older sample of 100 changes no counter
    (LATEST: an older event never replaces a newer one), so it cannot carry one past
    its bound. It was judged like a sum of 100 and refused as invalid."""
    feature = _feature(runtime, "LATEST")
    grant(runtime, "cust-1", None, feature=feature, billing_type=BillingType.PAY_PER_USE)
    top = 2**53 - 1 - 50
    assert runtime.ingest.ingest([_sample("cust-1", top, "new", 5)], now=NOW).outcomes == [
        Outcome.ACCEPTED
    ]
    report = runtime.ingest.ingest([_sample("cust-1", 100, "old", 60)], now=NOW)
    assert report.outcomes == [Outcome.ACCEPTED], report.reasons
    assert report.dead_lettered == 0
    (balance,) = runtime.balance.current("acme", "cust-1", feature, NOW)
    assert balance.consumed == Decimal(top)
