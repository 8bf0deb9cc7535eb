"""The producer client against a real worker: exact counts, idempotent retries, exit flush."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from meterd.client import CeleryTransport, MeterdClient
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.testing import wait_until

from .conftest import WorkerProcess

pytestmark = pytest.mark.e2e


def grant(rt: Runtime, customer: str) -> None:
    now = utcnow()
    rt.catalog.create_entitlement(
        NewEntitlement(org="acme", customer_id=customer, feature="api_calls",
                       quantity=Decimal(10**6), starts_at=now - timedelta(days=1), ends_at=None),
        now,
    )  # fmt: skip


def consumed(rt: Runtime, customer: str) -> Decimal:
    balances = rt.balance.balances("acme", customer, "api_calls", utcnow())
    return sum((b.consumed for b in balances), Decimal(0))


class PublishThenFail(CeleryTransport):
    """Publishes every batch, then reports failure the first time: as if the broker's
    confirmation were lost. The client sends the batch again."""

    def __init__(self, app: Celery) -> None:
        super().__init__(app)
        self.seen: set[str] = set()

    def send(self, events: list[dict[str, Any]]) -> None:
        super().send(events)
        first = events[0]["id"]
        if first not in self.seen:
            self.seen.add(first)
            raise ConnectionError("confirmation lost")


def test_client_batches_count_exactly_even_when_every_batch_is_sent_twice(
    e2e_runtime: Runtime, producer_app: Celery, worker: WorkerProcess
) -> None:
    for c in range(5):
        grant(e2e_runtime, f"cust-{c}")
    transport = PublishThenFail(producer_app)
    client = MeterdClient(
        transport, org="acme", source="client-test", batch_size=100, retry_backoff=0.01
    )
    for i in range(1000):
        client.record(f"cust-{i % 5}", "api_calls", "0.5")
    assert client.close(30)
    assert (client.stats.sent, client.stats.retries) == (1000, 10)
    worker.start()
    for c in range(5):
        wait_until(
            lambda c=c: consumed(e2e_runtime, f"cust-{c}") >= 100,  # type: ignore[misc]
            60,
            f"cust-{c} counted",
        )
    e2e_runtime.flush.flush_all(utcnow())
    assert [consumed(e2e_runtime, f"cust-{c}") for c in range(5)] == [Decimal(100)] * 5


def test_a_client_never_closed_sends_its_buffer_at_exit(
    e2e_runtime: Runtime, e2e_env: dict[str, str], worker: WorkerProcess
) -> None:
    grant(e2e_runtime, "cust-exit")
    script = Path(__file__).with_name("client_and_exit.py")
    subprocess.run([sys.executable, str(script), "250"], env=e2e_env, check=True, timeout=60)
    worker.start()
    wait_until(lambda: consumed(e2e_runtime, "cust-exit") == 250, 60, "the exit flush counted")
