"""A void lands while two real `celery worker` processes count a stream for its grant:
every event timed before the void's instant counts, none timed after it (issue 23)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from celery import Celery

from meterd.core.domain import Outcome
from meterd.core.timeutil import utcnow
from meterd.producer import publish_batches
from meterd.runtime import Runtime
from meterd.testing import event, wait_until

from ..helpers import assert_log_matches_periods
from .conftest import WorkerProcess, queue_depth
from .test_worker_exactness import grant_customers

pytestmark = pytest.mark.e2e


def test_a_void_racing_two_workers_keeps_what_was_timed_before_it(
    e2e_runtime: Runtime, producer_app: Celery, e2e_env: dict[str, str], tmp_path: Path
) -> None:
    rt = e2e_runtime
    (ent,) = grant_customers(rt, 1, ("1000000",))["cust-0"]
    workers = [WorkerProcess(e2e_env, tmp_path / f"w{i}.log").start() for i in range(2)]
    try:
        at = utcnow() + timedelta(seconds=60)  # ahead, within the clock skew events may have
        before = [
            event(
                customer="cust-0", event_id=f"b{i}", quantity="1", time=at - timedelta(seconds=30)
            )
            for i in range(4000)
        ]
        sender = threading.Thread(target=publish_batches, args=(producer_app, before, 200))
        sender.start()
        time.sleep(0.5)  # the stream is being counted
        rt.catalog.void_entitlement(ent.id, utcnow(), at=at, reason="race")
        after = [
            event(customer="cust-0", event_id=f"a{i}", quantity="1", time=at + timedelta(seconds=1))
            for i in range(500)
        ]
        publish_batches(producer_app, after, batch_size=100)
        sender.join()
        wait_until(lambda: queue_depth(producer_app) == 0, 120, "queue drained")
        wait_until(
            lambda: (
                rt.stats.events().get("accepted", 0)
                + rt.stats.events().get(Outcome.NO_ENTITLEMENT.value, 0)
                >= len(before) + len(after)
            ),
            120,
            lambda: f"every event judged: {rt.stats.events()}",
        )
        # the worker writes a batch's dead letters after the script counted it
        wait_until(
            lambda: rt.dead_letters.count(reason=Outcome.NO_ENTITLEMENT.value) >= len(after),
            60,
            "the events after the void dead-lettered",
        )
    finally:
        for w in workers:
            w.stop()
    rt.flush.flush_all(utcnow(), max_batches=100)
    assert [p.consumed for p in rt.usage.periods_of(ent.id)] == [Decimal(len(before))]
    assert rt.dead_letters.count(reason=Outcome.NO_ENTITLEMENT.value) == len(after)
    outcomes = rt.stats.events()
    assert outcomes.get("accepted") == len(before)
    # Outcomes count judgments: a batch retried (its dead letters met a locked
    # database) is judged again, its counted events as duplicates.
    assert outcomes.get(Outcome.NO_ENTITLEMENT.value, 0) >= len(after)
    assert_log_matches_periods(rt)
