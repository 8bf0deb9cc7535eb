"""Poison messages on RabbitMQ, where a body arrives as the producer's raw bytes."""

from __future__ import annotations

import json

import pytest
from celery import Celery
from kombu import Connection

from meterd.celery_config import INGEST_QUEUE
from meterd.runtime import Runtime
from meterd.testing import event

from .conftest import ONCE_IN_DEFAULT, WorkerProcess
from .test_poison_messages import (
    CUSTOMER,
    Publisher,
    counted,
    counting,
    publish,
    settle,
    unreadable_letters,
)

pytestmark = [pytest.mark.e2e, ONCE_IN_DEFAULT]
__all__ = ["counting", "publish"]  # fixtures


@pytest.fixture
def broker_url(amqp_broker_url: str) -> str:
    """Only for the test below: RabbitMQ, where the body arrives as raw bytes."""
    return amqp_broker_url


def test_poison_on_rabbitmq_neither_stops_the_worker_nor_is_lost(
    counting: Runtime, producer_app: Celery, worker: WorkerProcess, publish: Publisher
) -> None:
    worker.start()
    pid = worker.pid
    publish.raw(json.dumps({"a": 1}))
    publish.valid_batch()
    publish.raw("null")
    publish.raw(b"\x80\x04N.", content_type="application/x-python-serialize")
    publish.raw("[[[]], {}, {}]", headers={"task": "nope", "id": "x"})
    batch = [event(customer=CUSTOMER, event_id=f"amqp-{i}", source="poison-test") for i in range(5)]
    batch[2]["data"]["tag"] = {"__type__": "bytes", "__value__": "%%%"}
    publish.envelope(batch)
    publish.valid += 5
    publish.valid_batch()
    settle(counting, producer_app, publish, letters=3)
    assert counted(counting) == publish.valid
    assert sorted(r["kind"] for r in unreadable_letters(counting)) == [
        "content_type",
        "unknown_task",
    ]
    assert worker.alive() and worker.pid == pid
    with Connection(worker.env["METERD_BROKER_URL"]) as conn:
        assert conn.default_channel.queue_declare(INGEST_QUEUE, passive=True).message_count == 0
