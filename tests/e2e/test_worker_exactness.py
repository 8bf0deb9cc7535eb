"""A real `celery worker` counts exactly: duplicates, SIGKILLs and garbage included."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from celery import Celery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterd.core.quantity import to_micros
from meterd.core.timeutil import utcnow
from meterd.producer import publish_batches
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.testing import event, wait_until

from ..helpers import assert_log_matches_periods
from ..test_dead_letters import malformed
from .conftest import AT_SCALE_ONCE, WorkerProcess, queue_depth

pytestmark = pytest.mark.e2e

QUANTITIES = ["1", "0.5", "2.000001", "0.000003", "3"]


def grant_customers(rt: Runtime, n: int, limits: tuple[str, ...]) -> dict[str, list[Any]]:
    """Each customer gets one entitlement per limit, ending in that order."""
    now = utcnow()
    grants: dict[str, list[Any]] = {}
    for c in range(n):
        customer = f"cust-{c}"
        grants[customer] = [
            rt.catalog.create_entitlement(
                NewEntitlement(
                    org="acme",
                    customer_id=customer,
                    feature="api_calls",
                    quantity=Decimal(limit),
                    starts_at=now - timedelta(days=1),
                    ends_at=now + timedelta(days=10 + i),
                ),
                now,
            )
            for i, limit in enumerate(limits)
        ]
    return grants


def make_stream(
    n_unique: int, customers: int, duplicate_share: float, seed: int
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Events with a share of exact re-sends; returns them and the expected totals."""
    rng = random.Random(seed)
    unique = [
        event(
            customer=f"cust-{rng.randrange(customers)}",
            quantity=rng.choice(QUANTITIES),
            event_id=f"evt-{i}",
            source="e2e",
        )
        for i in range(n_unique)
    ]
    expected: dict[str, int] = {}
    for e in unique:
        expected[e["subject"]] = expected.get(e["subject"], 0) + to_micros(
            Decimal(e["data"]["quantity"])
        )
    n_dupes = int(n_unique * duplicate_share / (1 - duplicate_share))
    stream = unique + [dict(rng.choice(unique)) for _ in range(n_dupes)]
    rng.shuffle(stream)
    return stream, expected


def greedy_fill(total: int, limits: list[int]) -> list[int]:
    """Burn-down reference: fill each entitlement in order, the rest on the last."""
    out = []
    for i, limit in enumerate(limits):
        take = total if i == len(limits) - 1 else min(total, limit)
        out.append(take)
        total -= take
    return out


def counted_total(rt: Runtime, customers: int) -> int:
    total = 0
    for c in range(customers):
        total += sum(int(v) for v in rt.redis.hvals(rt.redis_keys.used("acme", f"cust-{c}")))
    return total


def assert_exact(rt: Runtime, grants: dict[str, list[Any]], expected: dict[str, int]) -> None:
    rt.flush.flush_all(utcnow(), max_batches=100)
    assert rt.counters.pending_fields() == {}
    for customer, ents in grants.items():
        limits = [to_micros(e.quantity) for e in ents]
        want = greedy_fill(expected.get(customer, 0), limits)
        got = [
            to_micros(sum((p.consumed for p in rt.usage.periods_of(e.id)), Decimal(0)))
            for e in ents
        ]
        assert got == want, f"{customer}: database has {got}, expected {want}"
        live = {
            b.entitlement_id: b.consumed
            for b in rt.balance.balances("acme", customer, "api_calls", utcnow())
        }
        assert [to_micros(live[e.id]) for e in ents] == want
    assert_log_matches_periods(rt)


@AT_SCALE_ONCE
def test_100k_events_with_10_percent_duplicates_are_counted_exactly(
    e2e_runtime: Runtime, producer_app: Celery, worker: WorkerProcess
) -> None:
    customers = 1000
    grants = grant_customers(e2e_runtime, customers, ("40", "60"))
    stream, expected = make_stream(90_000, customers, 0.10, seed=1)
    assert len(stream) == 100_000
    worker.start()
    publish_batches(producer_app, stream, batch_size=500)
    total = sum(expected.values())
    wait_until(
        lambda: counted_total(e2e_runtime, customers) >= total,
        60,
        lambda: f"all events counted: {counted_total(e2e_runtime, customers)} of {total}",
    )
    wait_until(lambda: queue_depth(producer_app) == 0, 60, "queue drained")
    time.sleep(1)  # let any straggling duplicate batch finish
    assert counted_total(e2e_runtime, customers) == total
    assert worker.alive()
    assert_exact(e2e_runtime, grants, expected)


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(bad=st.lists(malformed, min_size=60, max_size=60))
def test_malformed_events_do_not_stop_a_real_worker(
    e2e_runtime: Runtime, producer_app: Celery, worker: WorkerProcess, bad: list[Any]
) -> None:
    grants = grant_customers(e2e_runtime, 3, ("1000",))
    stream, expected = make_stream(300, 3, 0.0, seed=3)
    batches = []
    for i in range(0, 300, 50):
        batch: list[Any] = stream[i : i + 50]
        batch[10:10] = bad[i // 50 * 10 : i // 50 * 10 + 10]
        batches.append(batch)
    worker.start()
    for batch in batches:
        producer_app.send_task("meterd.ingest_batch", args=[batch])
    # Messages shaped wrong as a whole: one event instead of a list, junk arguments.
    producer_app.send_task("meterd.ingest_batch", args=[{"not": "a list"}])
    producer_app.send_task("meterd.ingest_batch", args=["text", 42], kwargs={"extra": 1})
    producer_app.send_task("meterd.ingest_batch", args=[])
    total = sum(expected.values())
    wait_until(lambda: counted_total(e2e_runtime, 3) >= total, 60, "valid events counted")
    wait_until(lambda: queue_depth(producer_app) == 0, 30, "queue drained")
    wait_until(
        lambda: sum(e2e_runtime.dead_letters.count_by_reason().values()) >= 3,
        30,
        "dead letters written",
    )
    assert worker.alive()
    assert counted_total(e2e_runtime, 3) == total
    assert_exact(e2e_runtime, grants, expected)
    letters = e2e_runtime.dead_letters.find(limit=1000)
    assert letters and all(letter.detail for letter in letters)
    assert {letter.reason for letter in letters} == {"invalid"}
