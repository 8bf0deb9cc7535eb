"""Random runs of ingest, voids, amends and flushes on two grants: whatever the
interleaving, what is counted is the sum of the events as last corrected, the
first grant never passes its quantity, and the log equals the periods."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest

from meterd.core.domain import Outcome
from meterd.core.errors import ConflictError
from meterd.runtime import Runtime
from meterd.testing import event

from .conftest import NOW
from .helpers import assert_log_matches_periods, consumed, grant

LATER = NOW + timedelta(minutes=5)


@pytest.mark.parametrize("seed", range(6))
def test_counts_follow_the_corrected_events(runtime: Runtime, seed: int) -> None:
    rng = random.Random(seed)
    first = grant(runtime, quantity="5", priority=1)
    second = grant(runtime, quantity="100", priority=2)
    model: dict[str, Decimal | None] = {}  # id -> quantity now (None: void)
    for step in range(40):
        op = rng.random()
        live = [k for k, v in model.items() if v is not None]
        if op < 0.4 or not model:
            eid = f"e{step}"
            qty = Decimal(rng.randint(1, 40)) / 4
            out = runtime.ingest.ingest(
                [event(event_id=eid, quantity=str(qty), time=NOW)], now=NOW
            ).outcomes
            assert out == [Outcome.ACCEPTED]
            model[eid] = qty
        elif op < 0.6 and live:
            eid = rng.choice(live)
            runtime.corrections.void("acme", "tests", eid, reason="r", actor="cli", now=LATER)
            model[eid] = None
        elif op < 0.8 and live:
            eid = rng.choice(live)
            qty = Decimal(rng.randint(1, 40)) / 4
            data = {"feature": "api_calls", "quantity": str(qty)}
            runtime.corrections.amend(
                "acme", "tests", eid, data, reason=f"r{step}", actor="cli", now=LATER
            )
            model[eid] = qty
        elif op < 0.9:
            voided = [k for k, v in model.items() if v is None]
            if voided:
                with pytest.raises(ConflictError):
                    runtime.corrections.void(
                        "acme", "tests", rng.choice(voided), reason="r", actor="cli", now=LATER
                    )
        else:
            runtime.flush.flush_all(LATER)
        now_counted = consumed(runtime, now=LATER)
        total = sum((v for v in model.values() if v is not None), Decimal(0))
        assert sum(now_counted.values()) == total
        assert Decimal(0) <= now_counted[str(first.id)] <= Decimal(5)
        assert now_counted[str(second.id)] >= 0
    runtime.flush.flush_all(LATER)
    assert sum(consumed(runtime, now=LATER).values()) == total
    assert_log_matches_periods(runtime)
