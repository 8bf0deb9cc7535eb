"""SIGKILL a real worker mid-stream, three times: every event still counted once.

Over both brokers: RabbitMQ, where a message stays unacked at the broker until
the task finished and comes back when the killed worker's connection drops;
and Redis through meterd's reliable transport (``meterd.broker``), where a
message is popped and recorded as unacked in one script and comes back after
the visibility timeout. (With kombu's own Redis transport this test lost a
batch about one run in three: see docs/architecture.md, "Brokers".)
"""

from __future__ import annotations

import random
import time

import pytest
from celery import Celery

from meterd.producer import publish_batches
from meterd.runtime import Runtime
from meterd.testing import wait_until

from ..conftest import BACKEND
from .conftest import BROKER_URL, VISIBILITY_TIMEOUT, WorkerProcess, queue_depth
from .test_worker_exactness import assert_exact, counted_total, grant_customers, make_stream

pytestmark = pytest.mark.e2e


#: The RabbitMQ variant runs once, in the default configuration: what it adds to the
#: Redis one is the broker's redelivery, the same over either store (CI's budget).
AMQP_ONCE = pytest.mark.skipif(
    BACKEND == "real", reason="the RabbitMQ variant runs once, in the default configuration"
)


@pytest.fixture(params=[pytest.param("amqp", marks=AMQP_ONCE), "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "amqp":
        return str(request.getfixturevalue("amqp_broker_url"))
    return BROKER_URL


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
    # Kill once past 20%, 45% and 70% of the stream (plus a random delay of up to a
    # tenth of a second), so every kill lands mid-stream however fast the worker is.
    for share in (0.20, 0.45, 0.70):
        wait_until(
            lambda share=share: counted_total(e2e_runtime, customers) > share * total,  # type: ignore[misc]
            60,
            f"worker counting past {share:.0%}",
            interval=0.02,
        )
        time.sleep(random.uniform(0, 0.1))
        before = counted_total(e2e_runtime, customers)
        worker.kill()
        kills += 1
        assert 0 < before < total, "the kill must land mid-stream"
        worker.start()
    assert kills == 3
    wait_until(
        lambda: counted_total(e2e_runtime, customers) >= total,
        60,
        lambda: f"all events counted: {counted_total(e2e_runtime, customers)} of {total}",
    )
    wait_until(lambda: queue_depth(producer_app) == 0, 60, "queue drained")
    # Redis broker: a killed worker's unacked batches come back after the visibility
    # timeout (5 s here); wait that long so a late redelivery is seen to dedupe.
    time.sleep(VISIBILITY_TIMEOUT + 2)
    assert counted_total(e2e_runtime, customers) == total
    assert_exact(e2e_runtime, grants, expected)
