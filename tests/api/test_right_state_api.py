"""The API and the three seed pages show the state at the instant (issue 11, items 2, 3
and 6), without the lifecycle job having run."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime

from ..helpers import grant

VALUE = "/v1/customers/cust-1/features/api_calls"
WORKSPACE = "/api/workspace/entitlement-operations/entitlements"
ZENSKAR = "/entitlements/customer/unique/cust-1"


def iso(days: float) -> str:
    return (utcnow() + timedelta(days=days)).isoformat()


def create(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    payload = {"customer_id": "cust-1", "feature": "api_calls", "quantity": "10", **body}
    response = client.post("/v1/entitlements", json=payload, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def test_an_entitlement_created_inside_its_grace_reads_grace_everywhere(
    client: TestClient, acme: dict[str, str]
) -> None:
    made = create(client, acme, starts_at=iso(-22), ends_at=iso(-3), grace_days=10)
    assert (made["status"], made["effective_state"]) == ("GRACE", "GRACE")
    audit = client.get(f"/v1/entitlements/{made['id']}/transitions", headers=acme).json()
    assert [(t["from_status"], t["to_status"]) for t in audit] == [("ACTIVE", "GRACE")]
    value = client.get(VALUE, headers=acme).json()
    assert (value["state"], value["has_access"]) == ("GRACE", True)
    (row,) = client.get(WORKSPACE, headers=acme).json()["Data"]["Items"]
    assert (row["Status"], row["EffectiveState"]) == (2, 2)
    zenskar = client.get(ZENSKAR, headers={**acme, "organisation": "acme"}).json()
    assert zenskar["results"][0]["total_expired_entitlements"] == 0


def test_a_backdated_auto_renewing_entitlement_is_renewed_when_created(
    client: TestClient, acme: dict[str, str]
) -> None:
    made = create(client, acme, starts_at=iso(-40), ends_at=iso(-10), auto_renew=True)
    assert made["status"] == "ACTIVE"
    periods = client.get(f"/v1/entitlements/{made['id']}/periods", headers=acme).json()
    assert len(periods) == 2 and periods[1]["period_start"] == periods[0]["period_end"]
    assert made["ends_at"] == periods[1]["period_end"]


def test_a_plain_expiry_reads_expired_everywhere_before_the_job_runs(
    client: TestClient, acme: dict[str, str], runtime: Runtime
) -> None:
    now = utcnow()
    ent = grant(
        runtime, starts_at=now - timedelta(days=30), ends_at=now + timedelta(seconds=1), now=now
    )
    # The job never runs; the clock passes ends_at.
    time.sleep(1.1)
    assert runtime.entitlements.get(ent.id).status == "ACTIVE"  # as recorded
    (row,) = client.get(WORKSPACE, headers=acme).json()["Data"]["Items"]
    assert (row["Status"], row["EffectiveState"]) == (3, 3)
    value = client.get(VALUE, headers=acme).json()
    assert (value["state"], value["has_access"]) == ("EXPIRED", False)
    expired = client.get("/v1/entitlements", params={"status": "EXPIRED"}, headers=acme).json()
    assert expired["total_count"] == 1
    zenskar = client.get(ZENSKAR, headers={**acme, "organisation": "acme"}).json()
    assert zenskar["results"][0]["total_expired_entitlements"] == 1


def test_an_auto_renewing_entitlement_past_its_end_keeps_access(
    client: TestClient, acme: dict[str, str], runtime: Runtime
) -> None:
    now = utcnow()
    grant(
        runtime, "cust-1", quantity="10", starts_at=now - timedelta(days=31),
        ends_at=now + timedelta(seconds=1), auto_renew=True,
    )  # fmt: skip
    time.sleep(1.1)
    value = client.get(VALUE, headers=acme).json()
    assert (value["state"], value["has_access"]) == ("ACTIVE", True)
    reserve = client.post(
        VALUE + "/reserve", json={"quantity": "3", "idempotency_key": "r-1"}, headers=acme
    ).json()
    assert reserve["outcome"] == "granted"


def test_reusing_a_reserve_key_for_another_quantity_is_409(
    client: TestClient, acme: dict[str, str], runtime: Runtime
) -> None:
    now = utcnow()
    grant(runtime, starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=30))
    first = client.post(
        VALUE + "/reserve", json={"quantity": "1", "idempotency_key": "k"}, headers=acme
    )
    again = client.post(
        VALUE + "/reserve", json={"quantity": "5", "idempotency_key": "k"}, headers=acme
    )
    assert first.json()["outcome"] == "granted"
    assert again.status_code == 409 and "idempotency key" in again.json()["detail"]
    assert client.get(VALUE, headers=acme).json()["consumed"] == "1"
