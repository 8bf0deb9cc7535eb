"""A real worker on the meterd.backfill queue counts a backfill's batches, each once
even when its message is delivered twice, through the message guard."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from celery import Celery

from meterd.celery_config import BACKFILL_QUEUE, BACKFILL_TASK
from meterd.core.terms import Term, TermUnit
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.testing import event, wait_until

from .conftest import WorkerProcess

pytestmark = pytest.mark.e2e


def test_a_worker_counts_each_backfill_batch_once(
    e2e_env: dict[str, str], e2e_runtime: Runtime, producer_app: Celery, tmp_path: Path
) -> None:
    now = utcnow()
    ent = e2e_runtime.catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id="cust-1", feature="api_calls", quantity=Decimal(10),
            starts_at=now - timedelta(days=400), auto_renew=True, term=Term.of(1, TermUnit.MONTH),
        ),
        now,
    )  # fmt: skip
    backfill_id = e2e_runtime.backfill.open("acme", "key:e2e", "api", now, 6)
    batches = [
        [
            event(quantity="4", event_id=f"b{n}-{i}", time=now - timedelta(days=60 + 30 * i))
            for i in range(3)
        ]
        for n in range(2)
    ]
    worker = WorkerProcess(e2e_env, tmp_path / "worker.log", queues=(BACKFILL_QUEUE,)).start()
    try:
        for no, batch in [(0, batches[0]), (1, batches[1]), (0, batches[0])]:  # one sent twice
            producer_app.send_task(
                BACKFILL_TASK, args=[batch, "acme", str(backfill_id), no], queue=BACKFILL_QUEUE
            )

        def done() -> bool:
            audit = e2e_runtime.backfill.store.get(backfill_id)
            return audit is not None and audit.accepted == 6

        wait_until(done, timeout=60)
        e2e_runtime.flush.flush_all(utcnow())  # the terms still open went through Redis
        assert sum(p.consumed for p in e2e_runtime.usage.periods_of(ent.id)) == Decimal(24)
    finally:
        worker.stop()
    audit = e2e_runtime.backfill.store.get(backfill_id)
    assert audit is not None and (audit.events, audit.accepted, audit.duplicates) == (6, 6, 0)
