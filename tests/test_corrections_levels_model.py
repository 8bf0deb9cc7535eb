"""Corrections of MAX, LATEST and UNIQUE_COUNT events agree with a plain model: after
any mix of samples, voids, amends and flushes on one or two grants, every period holds
the figure of the events left (as amended), live and flushed, and the log equals the
periods (hypothesis)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from meterd.core.domain import Aggregation
from meterd.core.errors import ConflictError
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime

from .helpers import assert_log_matches_periods, grant
from .test_aggregation_model import fill


@dataclass(frozen=True)
class Op:
    kind: str  # "void", "amend" or "flush"
    index: int = 0
    value: int = 0


ops = st.lists(
    st.one_of(
        st.builds(Op, kind=st.just("void"), index=st.integers(0, 7)),
        st.builds(Op, kind=st.just("amend"), index=st.integers(0, 7), value=st.integers(1, 9)),
        st.builds(Op, kind=st.just("flush")),
    ),
    min_size=1,
    max_size=6,
)


def figure(aggregation: Aggregation, live: dict[int, tuple[int, int]]) -> int:
    """live: index -> (minutes, value)."""
    if not live:
        return 0
    if aggregation is Aggregation.MAX:
        return max(v for _, v in live.values())
    if aggregation is Aggregation.LATEST:
        # the latest by event time, ties by event key (ids e<index> order as text)
        return max(live.items(), key=lambda kv: (kv[1][0], f"e{kv[0]}"))[1][1]
    return len({v for _, v in live.values()})


@pytest.mark.parametrize(
    "aggregation",
    [Aggregation.MAX, Aggregation.LATEST, Aggregation.UNIQUE_COUNT],
    ids=lambda a: a.value,
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    limits=st.lists(st.one_of(st.none(), st.integers(0, 12)), min_size=1, max_size=2),
    samples=st.lists(st.tuples(st.integers(0, 300), st.integers(1, 9)), min_size=1, max_size=8),
    flush_first=st.booleans(),
    steps=ops,
)
def test_corrections_of_levels_match_the_model(
    runtime: Runtime,
    aggregation: Aggregation,
    limits: list[int | None],
    samples: list[tuple[int, int]],
    flush_first: bool,
    steps: list[Op],
) -> None:
    note(f"limits={limits} samples={samples} flush_first={flush_first} steps={steps}")
    now = utcnow().replace(microsecond=0)
    feature = f"f{uuid.uuid4().hex[:12]}"
    customer = f"c-{uuid.uuid4().hex}"
    source = f"model-{uuid.uuid4().hex}"  # one runtime serves every example
    extra = {"value_property": "user"} if aggregation is Aggregation.UNIQUE_COUNT else {}
    runtime.catalog.create_feature(
        "acme", feature, now=now - timedelta(days=30), scale=0, aggregation=aggregation, **extra
    )
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

    def data(value: int) -> dict[str, Any]:
        if aggregation is Aggregation.UNIQUE_COUNT:
            return {"feature": feature, "quantity": "1", "user": f"u{value}"}
        return {"feature": feature, "quantity": str(value)}

    outcomes = runtime.ingest.ingest(
        [
            {
                "specversion": "1.0",
                "id": f"e{i}",
                "source": source,
                "type": "meterd.usage",
                "subject": customer,
                "org": "acme",
                "time": (now - timedelta(minutes=minutes)).isoformat(),
                "data": data(value),
            }
            for i, (minutes, value) in enumerate(samples)
        ],
        now=now,
    ).outcomes
    assert all(o.value == "accepted" for o in outcomes), outcomes
    if flush_first:
        runtime.flush.flush_all(now)
    # minutes ago -> an order by time: later events have fewer minutes ago
    live = {i: (-minutes, value) for i, (minutes, value) in enumerate(samples)}
    later = now + timedelta(minutes=1)
    for step in steps:
        if step.kind == "flush":
            runtime.flush.flush_all(later)
            continue
        index = step.index % len(samples)
        if step.kind == "void":
            if index not in live:
                with pytest.raises(ConflictError):
                    runtime.corrections.void(
                        "acme", source, f"e{index}", reason="m", actor="cli", now=later
                    )
                continue
            runtime.corrections.void(
                "acme", source, f"e{index}", reason="m", actor="cli", now=later
            )
            del live[index]
        else:
            if index not in live:
                continue
            runtime.corrections.amend(
                "acme",
                source,
                f"e{index}",
                data(step.value),
                reason=f"m{step.value}",
                actor="cli",
                now=later,
            )
            live[index] = (live[index][0], step.value)

    total = figure(aggregation, live)
    current = {
        b.entitlement_id: b.consumed
        for b in runtime.balance.current("acme", customer, feature, later)
    }
    shares = [current[e.id] for e in ents]
    if aggregation is Aggregation.UNIQUE_COUNT:
        # a unit taken back leaves its room where it was (as a void of a sum does)
        assert sum(shares) == Decimal(total)
    else:
        assert shares == [Decimal(v) for v in fill(total, limits)]
    runtime.flush.flush_all(later)
    stored = {
        b.entitlement_id: b.consumed
        for b in runtime.balance.balances("acme", customer, feature, later)
    }
    assert [stored[e.id] for e in ents] == shares
    assert_log_matches_periods(runtime)
