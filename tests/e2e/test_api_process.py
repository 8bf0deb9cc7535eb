"""`meterd api` serves the API from its own process (uvicorn), against the real stores."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.testing import answers, free_port, wait_until

from ..conftest import NOW
from .conftest import WorkerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def api_base(e2e_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "meterd.cli", "api", "--port", str(port)],
        env=e2e_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(base + "/healthz"), 30, "meterd api to answer")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_meterd_api_serves_health_the_spec_and_authenticated_reads(
    api_base: str, e2e_runtime: Runtime
) -> None:
    assert httpx.get(api_base + "/readyz").json()["checks"] == {"database": "ok", "redis": "ok"}
    spec = httpx.get(api_base + "/openapi.json").json()
    assert "/v1/customers/{customer_id}/features/{feature}/reserve" in spec["paths"]
    assert httpx.get(api_base + "/docs").status_code == 200
    token, _ = e2e_runtime.api_keys.create("acme", [Permission.ENTITLEMENTS_VIEW], NOW)
    url = api_base + "/v1/customers/c-1/features/api_calls"
    assert httpx.get(url).status_code == 401
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json()["state"] == "NO_ENTITLEMENT"


def test_events_posted_over_http_are_counted_by_a_real_worker(
    api_base: str, e2e_runtime: Runtime, worker: WorkerProcess
) -> None:
    from decimal import Decimal

    from meterd.core.timeutil import utcnow
    from meterd.services.catalog import NewEntitlement
    from meterd.testing import event

    now = utcnow()
    e2e_runtime.catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id="c-1", feature="api_calls", quantity=Decimal(100),
            starts_at=now - timedelta(days=1), ends_at=None,
        ),
        now,
    )  # fmt: skip
    token, _ = e2e_runtime.api_keys.create("acme", [Permission.ALL], NOW)
    headers = {"x-api-key": token, "content-type": "application/cloudevents-batch+json"}
    batch = [event("c-1", "1.5", event_id=f"h-{i}", time=now) for i in range(4)]
    for e in batch:
        del e["org"]  # HTTP ingest takes the org from the key
    worker.start()
    response = httpx.post(api_base + "/v1/events", content=json.dumps(batch), headers=headers)
    assert response.status_code == 202 and response.json()["queued"] == 4
    url = api_base + "/v1/customers/c-1/features/api_calls"

    def consumed() -> str:
        return str(httpx.get(url, headers={"x-api-key": token}).json()["consumed"])

    wait_until(lambda: consumed() == "6", 60, lambda: f"consumed 6, have {consumed()}")


def test_the_client_over_http_reports_rejected_events_and_counts_the_rest(
    api_base: str, e2e_runtime: Runtime, worker: WorkerProcess
) -> None:

    from meterd.client import HttpTransport, MeterdClient
    from meterd.core.timeutil import utcnow
    from meterd.services.catalog import NewEntitlement

    now = utcnow()
    e2e_runtime.catalog.create_entitlement(
        NewEntitlement(org="acme", customer_id="h-1", feature="api_calls", quantity=None,
                       starts_at=now - timedelta(days=1), ends_at=None),
        now,
    )  # fmt: skip
    token, _ = e2e_runtime.api_keys.create("acme", [Permission.ALL], NOW)
    rejected: list[dict[str, object]] = []
    transport = HttpTransport(api_base, token, on_rejected=rejected.extend)
    worker.start()
    with MeterdClient(transport, org="acme", source="http-client", batch_size=50) as client:
        for i in range(120):
            client.record("h-1", "api_calls", "0.25", event_id=f"hc-{i}")
        client.record("h-1", "no such feature!", 1)  # refused by the API's validation
    assert client.stats.sent == 120 and client.stats.failed == 1  # invalid: not sent
    assert len(rejected) == 1 and rejected[0]["status"] == "invalid"
    url = api_base + "/v1/customers/h-1/features/api_calls"
    wait_until(
        lambda: httpx.get(url, headers={"x-api-key": token}).json()["consumed"] == "30",
        60,
        "120 x 0.25 counted",
    )


def test_a_json_number_quantity_the_api_takes_is_counted_exactly_by_the_worker(
    api_base: str, e2e_runtime: Runtime, worker: WorkerProcess
) -> None:
    """The API read ``0.00001`` exactly but published it with kombu's JSON, as the
    float's repr ``1e-05``, which the worker refused (202, then a dead letter)."""
    from decimal import Decimal

    from meterd.core.timeutil import utcnow
    from meterd.services.catalog import NewEntitlement
    from meterd.testing import event

    now = utcnow()
    e2e_runtime.catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id="c-1", feature="api_calls", quantity=Decimal(100),
            starts_at=now - timedelta(days=1), ends_at=None,
        ),
        now,
    )  # fmt: skip
    token, _ = e2e_runtime.api_keys.create("acme", [Permission.ALL], NOW)
    headers = {"x-api-key": token, "content-type": "application/cloudevents-batch+json"}
    batch = [event("c-1", "1", event_id=f"n-{i}", time=now) for i in range(3)]
    for e in batch:
        del e["org"]
    body = json.dumps(batch).replace('"quantity": "1"', '"quantity": 0.00001')
    worker.start()
    response = httpx.post(api_base + "/v1/events", content=body, headers=headers)
    assert response.status_code == 202 and response.json()["queued"] == 3

    def consumed() -> Decimal:
        return sum(
            (b.consumed for b in e2e_runtime.balance.balances("acme", "c-1", "api_calls", now)),
            Decimal(0),
        )

    wait_until(lambda: consumed() >= Decimal("0.00003"), 30, lambda: f"counted {consumed()}")
    assert consumed() == Decimal("0.00003")
    assert e2e_runtime.dead_letters.find() == []
