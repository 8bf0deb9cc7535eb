"""Every aggregation, counted by ingest.lua, agrees with a plain Python model of its
rules, for any mix of grants, values, redeliveries, out-of-order times, late events
and flushes in between (hypothesis).

The model is deliberately naive: it keeps every event, decides which ones count
(first delivery of each id, not older than the late window), computes the
period's figure from them alone (a sum, a count, the distinct values, the peak,
the value of the latest event by time and id), and fills the grants with it in
burn-down order, the last taking the rest. Nothing in it depends on the order of
delivery, so any difference is a bug of the counting path.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterd.core.domain import Aggregation
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime

from .helpers import grant

LATE = timedelta(days=36)  # beyond the default late window of 35 days


@dataclass(frozen=True)
class Sent:
    id: str
    minutes_ago: int  # -1: older than the late window
    value: int


def figure(aggregation: Aggregation, counted: list[Sent]) -> int:
    """The period's figure of the events that count."""
    if not counted:
        return 0
    if aggregation is Aggregation.SUM:
        return sum(e.value for e in counted)
    if aggregation is Aggregation.COUNT:
        return len(counted)
    if aggregation is Aggregation.UNIQUE_COUNT:
        return len({e.value for e in counted})
    if aggregation is Aggregation.MAX:
        return max(e.value for e in counted)
    # LATEST: the latest by event time, ties by id (the event key orders them)
    return max(counted, key=lambda e: (-e.minutes_ago, e.id)).value


def fill(total: int, limits: list[int | None]) -> list[int]:
    """The figure spread down the grants in burn-down order; the last takes the rest."""
    shares = []
    left = total
    for position, limit in enumerate(limits):
        last = position == len(limits) - 1
        share = left if last or limit is None else min(left, limit)
        shares.append(share)
        left -= share
    return shares


def reference(
    aggregation: Aggregation, deliveries: list[Sent], limits: list[int | None]
) -> list[int]:
    first: dict[str, Sent] = {}
    for sent in deliveries:
        first.setdefault(sent.id, sent)
    counted = [e for e in first.values() if e.minutes_ago >= 0]
    return fill(figure(aggregation, counted), limits)


METERS = {
    Aggregation.SUM: {"value_property": "v"},
    Aggregation.COUNT: {},
    Aggregation.UNIQUE_COUNT: {"value_property": "v"},
    Aggregation.MAX: {"value_property": "v"},
    Aggregation.LATEST: {"value_property": "v"},
}


def payload(customer: str, sent: Sent, now: datetime) -> dict[str, Any]:
    when = now - (LATE if sent.minutes_ago < 0 else timedelta(minutes=sent.minutes_ago))
    value: Any = sent.value if sent.value % 2 else str(sent.value)  # numbers and text
    return {
        "specversion": "1.0",
        "id": sent.id,
        "source": "model",
        "type": "model.event",
        "subject": customer,
        "org": "acme",
        "time": when.isoformat(),
        "data": {"v": value},
    }


events = st.lists(
    st.builds(
        Sent,
        id=st.sampled_from([f"e{i}" for i in range(8)]),
        minutes_ago=st.one_of(st.integers(0, 600), st.just(-1)),
        value=st.integers(0, 40),
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    aggregation=st.sampled_from(list(Aggregation)),
    limits=st.lists(st.one_of(st.none(), st.integers(0, 60)), min_size=1, max_size=3),
    sent=events,
    cuts=st.lists(st.integers(1, 29), max_size=4),
    flush_at_cuts=st.booleans(),
)
def test_every_aggregation_matches_the_reference_model(
    runtime: Runtime,
    aggregation: Aggregation,
    limits: list[int | None],
    sent: list[Sent],
    cuts: list[int],
    flush_at_cuts: bool,
) -> None:
    # Dated from the real clock, not the tests' NOW: a UNIQUE_COUNT set expires at an
    # absolute time that Redis compares with its own clock (see tests/conftest.py).
    now = utcnow()
    # one redelivery of an id sends what its first delivery sent (as producers do)
    firsts: dict[str, Sent] = {}
    deliveries = [firsts.setdefault(s.id, s) for s in sent]
    feature = f"f{uuid.uuid4().hex[:12]}"
    runtime.catalog.create_feature(
        "acme",
        feature,
        now=now - timedelta(days=365),  # before every event (a meter starts at its creation)
        scale=0,
        aggregation=aggregation,
        event_type="model.event",
        **METERS[aggregation],
    )
    customer = f"c-{uuid.uuid4().hex}"
    ents = [
        grant(
            runtime,
            customer,
            None if limit is None else str(limit),
            feature=feature,
            priority=position,
            starts_at=now - timedelta(days=10),
            ends_at=now + timedelta(days=20),
            now=now,
        )
        for position, limit in enumerate(limits)
    ]
    # delivered in batches split at ``cuts``, with a flush between them or not
    bounds = sorted({0, len(deliveries), *(c for c in cuts if c < len(deliveries))})
    for start, end in itertools.pairwise(bounds):
        batch = [payload(customer, s, now) for s in deliveries[start:end]]
        runtime.ingest.ingest(batch, now=now)
        if flush_at_cuts:
            runtime.flush.flush_all(now)

    expected = [Decimal(v) for v in reference(aggregation, deliveries, limits)]
    live = {
        b.entitlement_id: b.consumed
        for b in runtime.balance.current("acme", customer, feature, now)
    }
    assert [live[e.id] for e in ents] == expected
    runtime.flush.flush_all(now)
    stored = {
        b.entitlement_id: b.consumed
        for b in runtime.balance.balances("acme", customer, feature, now)
    }
    assert [stored[e.id] for e in ents] == expected
