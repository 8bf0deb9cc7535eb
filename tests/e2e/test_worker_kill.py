"""SIGKILL a real worker mid-stream, three times: every event still counted once.

This runs with RabbitMQ as the broker. With AMQP, a message stays unacked at
the broker until the task finished, and comes back the moment the killed
worker's connection drops. kombu's Redis transport cannot promise that: it
pops a message with BRPOP and only then records it as unacked, so a worker
killed in between loses the message (see docs/architecture.md, "Brokers").
"""

from __future__ import annotations

import random
import time

import pytest
from celery import Celery

from meterd.producer import publish_batches
from meterd.runtime import Runtime

from .conftest import WorkerProcess, queue_depth, wait_for
from .test_worker_exactness import assert_exact, counted_total, grant_customers, make_stream

pytestmark = pytest.mark.e2e


@pytest.fixture
def broker_url(amqp_broker_url: str) -> str:
    return amqp_broker_url


def test_worker_killed_three_times_mid_stream_still_counts_exactly(
    e2e_runtime: Runtime, producer_app: Celery, worker: WorkerProcess
) -> None:
    customers = 200
    grants = grant_customers(e2e_runtime, customers, ("100", "50"))
    stream, expected = make_stream(40_000, customers, 0.10, seed=2)
    total = sum(expected.values())
    # Small batches so that every kill lands with batches in flight.
    publish_batches(producer_app, stream, batch_size=100)
    worker.start()
    kills = 0
    for _ in range(3):
        wait_for(lambda: counted_total(e2e_runtime, customers) > 0, 60, "worker counting")
        time.sleep(random.uniform(0.3, 1.0))
        before = counted_total(e2e_runtime, customers)
        worker.kill()
        kills += 1
        assert 0 < before < total, "the kill must land mid-stream"
        worker.start()
    assert kills == 3
    wait_for(
        lambda: counted_total(e2e_runtime, customers) >= total,
        60,
        lambda: f"all events counted: {counted_total(e2e_runtime, customers)} of {total}",
    )
    wait_for(lambda: queue_depth(producer_app) == 0, 60, "queue drained")
    time.sleep(2)  # let any redelivered batch finish: it must dedupe to nothing
    assert counted_total(e2e_runtime, customers) == total
    assert_exact(e2e_runtime, grants, expected)
