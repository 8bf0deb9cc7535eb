"""A producer in another language: celery-node (npm) publishes meterd.ingest_batch over
AMQP with Celery's message protocol 2, and a real meterd worker counts it exactly."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.testing import event, wait_until

from ..conftest import require
from .conftest import WorkerProcess

pytestmark = pytest.mark.e2e

PRODUCER = Path(__file__).with_name("node_producer")


@pytest.fixture
def broker_url(amqp_broker_url: str) -> str:
    return amqp_broker_url


@pytest.fixture(scope="module")
def node_producer() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        require("Node.js and npm", FileNotFoundError("node/npm not on PATH"))
    if not (PRODUCER / "node_modules" / "celery-node").exists():
        subprocess.run(
            [str(npm), "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=PRODUCER, check=True, timeout=300, capture_output=True,
        )  # fmt: skip
    return PRODUCER


def test_a_node_celery_client_publishes_batches_meterd_counts(
    e2e_runtime: Runtime, broker_url: str, worker: WorkerProcess, node_producer: Path
) -> None:
    now = utcnow()
    e2e_runtime.catalog.create_entitlement(
        NewEntitlement(org="acme", customer_id="node-1", feature="api_calls",
                       quantity=Decimal(100), starts_at=now - timedelta(days=1), ends_at=None),
        now,
    )  # fmt: skip
    batch = [
        event("node-1", "1.25", event_id=f"n{i}", source="node-svc", time=now) for i in range(8)
    ]
    worker.start()
    for _ in range(2):  # the second publish is a redelivery: every event a duplicate
        subprocess.run(
            ["node", "publish.js", broker_url, json.dumps(batch)],
            cwd=node_producer, check=True, timeout=60, capture_output=True,
        )  # fmt: skip

    def consumed() -> Decimal:
        balances = e2e_runtime.balance.balances("acme", "node-1", "api_calls", utcnow())
        return sum((b.consumed for b in balances), Decimal(0))

    wait_until(lambda: consumed() == Decimal(10), 60, lambda: f"10 counted, have {consumed()}")
    # The two messages may be taken in either order and at different times: wait for
    # the second one too, then the total must not have moved.
    wait_until(
        lambda: e2e_runtime.stats.events().get("duplicate", 0) == 8,
        60,
        lambda: f"8 duplicates, have {e2e_runtime.stats.events()}",
    )
    assert consumed() == Decimal(10)
