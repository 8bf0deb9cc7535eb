"""A real worker: a threshold crossing reaches the org's webhook once, through meterd.notify."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from celery import Celery

from meterd.celery_config import FLUSH_QUEUE, INGEST_QUEUE, NOTIFY_QUEUE
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.testing import event, wait_until

from ..test_notifications import Receiver
from .conftest import WorkerProcess

pytestmark = pytest.mark.e2e


def consumed(rt: Runtime) -> Decimal:
    return sum(
        (b.consumed for b in rt.balance.balances("acme", "cust-1", "api_calls", utcnow())),
        Decimal(0),
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([503])  # the first call fails: the worker must come back to it
    yield r
    r.close()


def test_a_crossing_reaches_the_webhook_once_even_when_the_batch_is_redelivered(
    e2e_env: dict[str, str],
    e2e_runtime: Runtime,
    producer_app: Celery,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    now = utcnow()
    e2e_runtime.notification_store.set_webhook("acme", receiver.url, "k")
    ent = e2e_runtime.catalog.create_entitlement(
        NewEntitlement(
            org="acme",
            customer_id="cust-1",
            feature="api_calls",
            quantity=Decimal(10),
            starts_at=now - timedelta(days=1),
            ends_at=now + timedelta(days=10),
        ),
        now,
    )
    batch = [event("cust-1", "3", event_id=f"e-{i}", time=now) for i in range(3)]
    # The receiver is on the loopback: a target the SSRF guard refuses unless allowed.
    env = {**e2e_env, "METERD_WEBHOOK_ALLOW_PRIVATE": "1"}
    worker = WorkerProcess(
        env, tmp_path / "worker.log", queues=(INGEST_QUEUE, FLUSH_QUEUE, NOTIFY_QUEUE)
    ).start()
    try:
        for _ in range(2):  # the second is a redelivery: every event a duplicate
            producer_app.send_task("meterd.ingest_batch", args=[batch])
        wait_until(lambda: consumed(e2e_runtime) == Decimal(9), 60, "the batch to be counted")
        producer_app.send_task("meterd.flush")
        wait_until(lambda: len(receiver.requests) >= 1, 60, "the first webhook call")
        # The first call got 503: the beat-driven dispatcher retries after the backoff.
        notes = e2e_runtime.notification_store.all_for(ent.id)
        wait_until(
            lambda: e2e_runtime.notification_store.all_for(ent.id)[0].attempts == 1,
            30,
            "the failed attempt to be recorded",
        )
        retry_at = utcnow() + timedelta(seconds=11)
        while utcnow() < retry_at:
            time.sleep(0.5)
        producer_app.send_task("meterd.lifecycle.dispatch_notifications", queue=FLUSH_QUEUE)
        wait_until(lambda: len(receiver.requests) >= 2, 60, "the retried webhook call")
        producer_app.send_task("meterd.flush")
        time.sleep(2)
    finally:
        worker.stop()
    bodies = [json.loads(body) for _, body in receiver.requests]
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert bodies[0]["type"] == "entitlement.threshold_crossed"
    assert bodies[0]["data"]["threshold_percent"] == 80
    (note,) = e2e_runtime.notification_store.all_for(ent.id)
    assert note.delivery == "delivered" and note.attempts == 2
    assert len(notes) == 1
