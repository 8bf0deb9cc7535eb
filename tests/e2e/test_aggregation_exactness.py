"""A real `celery worker` counts UNIQUE_COUNT and MAX meters exactly: 100k raw events
with duplicates, and a stream with the worker SIGKILLed three times.

Each event (type ``activity``) feeds two features at once: ``active_users``
counts the distinct ``data.user`` of each customer, ``peak_gb`` keeps the
highest ``data.gb``. A redelivered event must not count a user twice, and no
redelivery or kill may move a peak.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from celery import Celery

from meterd.core.domain import BillingType
from meterd.core.timeutil import isoformat, utcnow
from meterd.producer import publish_batches
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.testing import wait_until

from ..helpers import assert_log_matches_periods
from .conftest import AT_SCALE_ONCE, VISIBILITY_TIMEOUT, WorkerProcess, queue_depth

pytestmark = pytest.mark.e2e

FEATURES = {
    "active_users": {"aggregation": "UNIQUE_COUNT", "value_property": "user", "scale": 0},
    "peak_gb": {"aggregation": "MAX", "value_property": "gb", "scale": 3},
}


def define_meters(rt: Runtime, customers: int) -> None:
    now = utcnow()
    for key, columns in FEATURES.items():
        rt.catalog.create_feature("acme", key, now=now, event_type="activity", **columns)
        for c in range(customers):
            rt.catalog.create_entitlement(
                NewEntitlement(
                    org="acme",
                    customer_id=f"cust-{c}",
                    feature=key,
                    quantity=None,
                    starts_at=now - timedelta(days=1),
                    ends_at=None,
                    billing_type=BillingType.PAY_PER_USE,
                ),
                now,
            )


def make_stream(
    n_unique: int, customers: int, duplicate_share: float, seed: int
) -> tuple[list[dict[str, Any]], dict[str, tuple[int, Decimal]]]:
    """Raw events with a share of exact re-sends; the expected (distinct users, peak)
    of each customer."""
    rng = random.Random(seed)
    when = isoformat(utcnow())
    unique = []
    expected: dict[str, tuple[set[int], Decimal]] = {}
    for i in range(n_unique):
        customer = f"cust-{rng.randrange(customers)}"
        user = rng.randrange(300)
        gb = Decimal(rng.randrange(1, 10**7)) / 1000
        unique.append(
            {
                "specversion": "1.0",
                "id": f"act-{i}",
                "source": "e2e",
                "type": "activity",
                "subject": customer,
                "org": "acme",
                "time": when,
                "data": {"user": f"u{user}", "gb": str(gb)},
            }
        )
        users, peak = expected.setdefault(customer, (set(), Decimal(0)))
        users.add(user)
        expected[customer] = (users, max(peak, gb))
    n_dupes = int(n_unique * duplicate_share / (1 - duplicate_share))
    stream = unique + [dict(rng.choice(unique)) for _ in range(n_dupes)]
    rng.shuffle(stream)
    return stream, {c: (len(users), peak) for c, (users, peak) in expected.items()}


def accepted_items(rt: Runtime) -> int:
    return rt.stats.events().get("accepted", 0)


def assert_exact(rt: Runtime, expected: dict[str, tuple[int, Decimal]], customers: int) -> None:
    rt.flush.flush_all(utcnow(), max_batches=100)
    assert rt.counters.pending_fields() == {}
    for c in range(customers):
        customer = f"cust-{c}"
        users, peak = expected.get(customer, (0, Decimal(0)))
        for feature, want in (("active_users", Decimal(users)), ("peak_gb", peak)):
            (stored,) = rt.balance.balances("acme", customer, feature, utcnow())
            assert stored.consumed == want, f"{customer} {feature}: {stored.consumed} != {want}"
    assert_log_matches_periods(rt)


@AT_SCALE_ONCE
def test_100k_raw_events_count_unique_users_and_peaks_exactly(
    e2e_runtime: Runtime, producer_app: Celery, worker: WorkerProcess
) -> None:
    customers = 500
    define_meters(e2e_runtime, customers)
    stream, expected = make_stream(90_000, customers, 0.10, seed=11)
    assert len(stream) == 100_000
    worker.start()
    publish_batches(producer_app, stream, batch_size=500)
    items = 2 * 90_000
    wait_until(
        lambda: accepted_items(e2e_runtime) >= items,
        120,
        lambda: f"all items counted: {accepted_items(e2e_runtime)} of {items}",
    )
    wait_until(lambda: queue_depth(producer_app) == 0, 60, "queue drained")
    time.sleep(1)  # let any straggling duplicate batch finish
    assert accepted_items(e2e_runtime) == items
    assert worker.alive()
    assert_exact(e2e_runtime, expected, customers)


def test_worker_killed_three_times_keeps_unique_counts_and_peaks_exact(
    e2e_runtime: Runtime, producer_app: Celery, worker: WorkerProcess
) -> None:
    customers = 100
    define_meters(e2e_runtime, customers)
    stream, expected = make_stream(20_000, customers, 0.10, seed=12)
    items = 2 * 20_000
    publish_batches(producer_app, stream, batch_size=100)
    worker.start()
    for share in (0.20, 0.45, 0.70):
        wait_until(
            lambda share=share: accepted_items(e2e_runtime) > share * items,  # type: ignore[misc]
            90,
            f"worker counting past {share:.0%}",
            interval=0.02,
        )
        time.sleep(random.uniform(0, 0.1))
        before = accepted_items(e2e_runtime)
        worker.kill()
        assert 0 < before < items, "the kill must land mid-stream"
        worker.start()
    wait_until(
        lambda: accepted_items(e2e_runtime) >= items,
        90,
        lambda: f"all items counted: {accepted_items(e2e_runtime)} of {items}",
    )
    wait_until(lambda: queue_depth(producer_app) == 0, 60, "queue drained")
    time.sleep(VISIBILITY_TIMEOUT + 2)  # a killed worker's batches come back; they dedupe
    assert accepted_items(e2e_runtime) == items
    assert_exact(e2e_runtime, expected, customers)
