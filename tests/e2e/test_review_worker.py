"""Headers the guard let through that Celery reads to lose or hold a batch.

Found in review: Celery's strategy and its pool act on ``timelimit`` and
``eta`` after the guard has passed the message on, where a failure is logged
and the message acknowledged (the batch lost), or held in the worker's memory.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from meterd.runtime import Runtime
from meterd.testing import event

from .conftest import WorkerProcess
from .test_poison_messages import CUSTOMER, Publisher, counted, settle, unacked
from .test_worker_exactness import grant_customers

pytestmark = pytest.mark.e2e


@pytest.fixture
def counting(e2e_runtime: Runtime) -> Runtime:
    grant_customers(e2e_runtime, 1, ("1000000",))
    return e2e_runtime


@pytest.fixture
def publisher(producer_app: Celery) -> Publisher:
    return Publisher(producer_app)


def send_with_headers(publisher: Publisher, headers: dict[str, Any], n: int) -> None:
    batch = [event(customer=CUSTOMER, event_id=f"h-{j}", source="review") for j in range(n)]
    publisher.envelope(batch, **headers)
    publisher.valid += n
    publisher.valid_batch()


@pytest.mark.parametrize(
    "timelimit", [[0.001, None], [None, 0.001]], ids=["soft", "hard"]
)  # fmt: skip
def test_a_time_limit_a_producer_sets_neither_stops_nor_loses_its_batch(
    counting: Runtime,
    producer_app: Celery,
    worker: WorkerProcess,
    publisher: Publisher,
    timelimit: list[float | None],
) -> None:
    """A soft limit raised SoftTimeLimitExceeded in the task, a hard one killed the
    pool process: the message was acknowledged as failed, its batch never counted."""
    worker.start()
    pid = worker.pid
    send_with_headers(publisher, {"timelimit": timelimit}, 200)
    settle(counting, producer_app, publisher, letters=0)
    assert counted(counting) == publisher.valid
    assert worker.alive() and worker.pid == pid
    assert unacked(worker.env) == 0


@pytest.mark.parametrize(
    "eta",
    [
        "0001-01-01T00:00:00+14:00",  # Celery cannot make a timestamp of it
        "2024-01-01T00:00:00 +00:00",  # datetime.fromisoformat reads it, Celery does not
        "2024-01-01T00:00:00.Z",
        "9999-12-31T00:00:00+00:00",  # held in the worker's memory until then
    ],
)
def test_an_eta_a_producer_sets_neither_loses_nor_holds_its_batch(
    counting: Runtime,
    producer_app: Celery,
    worker: WorkerProcess,
    publisher: Publisher,
    eta: str,
) -> None:
    worker.start()
    pid = worker.pid
    send_with_headers(publisher, {"eta": eta}, 3)
    settle(counting, producer_app, publisher, letters=0)
    assert counted(counting) == publisher.valid
    assert worker.alive() and worker.pid == pid
