"""`meterd status --json` against a known state; the worker-side Prometheus exporter."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from meterd.core.timeutil import utcnow
from meterd.ops import gather
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.testing import event, free_port, wait_until

from .conftest import WorkerProcess

pytestmark = pytest.mark.e2e


def test_status_reports_queue_depth_lag_dead_letters_and_no_workers(
    e2e_runtime: Runtime, producer_app: Celery, e2e_env: dict[str, str]
) -> None:
    now = utcnow()
    for i in range(7):  # seven messages waiting, no worker
        producer_app.send_task("meterd.ingest_batch", args=[[event(event_id=f"q{i}")]])
    e2e_runtime.ingest.ingest([{"junk": 1}, {"junk": 2}], now=now)
    e2e_runtime.catalog.create_entitlement(
        NewEntitlement(org="acme", customer_id="c", feature="api_calls", quantity=Decimal(5),
                       starts_at=now - timedelta(days=1), ends_at=None),
        now,
    )  # fmt: skip
    e2e_runtime.ingest.ingest([event("c", event_id="counted", time=now)], now=now)
    result = subprocess.run(
        [sys.executable, "-m", "meterd.cli", "status", "--json", "--sample", "0"],
        env=e2e_env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    status = json.loads(result.stdout)
    depths = {q["queue"]: q for q in status["queues"]}
    assert depths["meterd.ingest"] == {"queue": "meterd.ingest", "ready": 7, "unacked": 0}
    assert status["dead_letters"] == {"invalid": 2}
    assert status["workers"] == []
    assert status["flush_lag_seconds"] is not None and status["flush_lag_seconds"] >= 0
    assert status["errors"] == []


def test_status_sees_a_worker_and_its_throughput(
    e2e_runtime: Runtime, producer_app: Celery, worker: WorkerProcess
) -> None:
    worker.start()
    wait_until(lambda: bool(gather(e2e_runtime, producer_app).workers), 60, "the worker to answer")
    now = utcnow()
    e2e_runtime.catalog.create_entitlement(
        NewEntitlement(org="acme", customer_id="c", feature="api_calls", quantity=None,
                       starts_at=now - timedelta(days=1), ends_at=None),
        now,
    )  # fmt: skip
    for b in range(20):
        batch = [event("c", event_id=f"t{b}-{i}", time=now) for i in range(100)]
        producer_app.send_task("meterd.ingest_batch", args=[batch])
    wait_until(
        lambda: e2e_runtime.stats.events().get("accepted", 0) == 2000, 60, "the stream counted"
    )
    status = gather(e2e_runtime, producer_app, sample_seconds=0.5)
    assert len(status.workers or []) == 1
    assert status.events_total["accepted"] == 2000


def test_the_worker_exports_prometheus_metrics(
    e2e_env: dict[str, str], e2e_runtime: Runtime, producer_app: Celery, tmp_path: Path
) -> None:
    port = free_port()
    worker = WorkerProcess({**e2e_env, "METERD_METRICS_PORT": str(port)}, tmp_path / "w.log")
    worker.start()
    try:
        producer_app.send_task("meterd.ingest_batch", args=[[{"junk": True}]])

        def invalid_seen() -> bool:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return False
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "meterd_events_total" and sample.labels == {
                        "outcome": "invalid"
                    }:
                        return sample.value >= 1
            return False

        wait_until(invalid_seen, 60, "the exporter to report the invalid event")
    finally:
        worker.stop()
