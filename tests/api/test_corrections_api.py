"""``POST /v1/events/void`` and ``/v1/events/amend`` over HTTP: the permission, the
404 and 409, and every figure the API shows agreeing afterwards."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.testing import event

from ..helpers import grant
from .conftest import key_for


def setup(rt: Runtime) -> Any:
    now = utcnow()
    ent = grant(rt, starts_at=now - timedelta(days=10), ends_at=now + timedelta(days=20), now=now)
    rt.ingest.ingest(
        [
            event(event_id="e1", quantity="4", time=now),
            event(event_id="e2", quantity="1", time=now),
        ],
        now=now,
    )
    rt.flush.flush_all(now)
    return ent


def figures(
    client: TestClient, headers: dict[str, str], ent: Any, feature: str = "api_calls"
) -> list[str]:
    value = client.get(f"/v1/customers/cust-1/features/{feature}", headers=headers).json()
    periods = client.get(f"/v1/entitlements/{ent.id}/periods", headers=headers).json()
    now = utcnow()
    usage = client.get(
        "/v1/usage",
        params={
            "customer_id": "cust-1",
            "from": (now - timedelta(days=1)).isoformat(),
            "to": (now + timedelta(days=1)).isoformat(),
        },
        headers=headers,
    ).json()
    return [
        value["consumed"],
        periods["data"][0]["consumed"] if "data" in periods else periods[0]["consumed"],
        usage["data"][0]["quantity"] if usage.get("data") else "0",
    ]


def test_void_and_amend_over_http_agree_everywhere(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    ent = setup(runtime)
    body = {"source": "tests", "id": "e1", "reason": "wrong meter"}
    amended = client.post(
        "/v1/events/amend",
        json={**body, "data": {"feature": "api_calls", "quantity": 2.5}},
        headers=acme,
    )
    assert amended.status_code == 200, amended.text
    assert amended.json()["kind"] == "amend"
    assert amended.json()["actor"].startswith("key:") and amended.json()["actor"].count(":") >= 2
    runtime.flush.flush_all(utcnow())
    assert [float(x) for x in figures(client, acme, ent)] == [3.5, 3.5, 3.5]
    voided = client.post("/v1/events/void", json=body, headers=acme)
    assert voided.status_code == 200, voided.text
    assert [p["quantity"] for p in voided.json()["parts"]] == ["-2.5"]
    # before the flush the live figures show it; /v1/usage reads the log, after it
    assert [float(x) for x in figures(client, acme, ent)[:2]] == [1, 1]
    runtime.flush.flush_all(utcnow())
    assert [float(x) for x in figures(client, acme, ent)] == [1, 1, 1]
    assert client.post("/v1/events/void", json=body, headers=acme).status_code == 409
    again = client.post(
        "/v1/events/amend",
        json={**body, "data": {"feature": "api_calls", "quantity": "1"}},
        headers=acme,
    )
    assert again.status_code == 409


def test_a_void_of_an_unknown_event_is_404(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    setup(runtime)
    body = {"source": "tests", "id": "never", "reason": "x"}
    assert client.post("/v1/events/void", json=body, headers=acme).status_code == 404


def test_corrections_need_events_correct(client: TestClient, runtime: Runtime) -> None:
    setup(runtime)
    writer = key_for(runtime, "acme", Permission.EVENTS_WRITE)
    body = {"source": "tests", "id": "e1", "reason": "x"}
    assert client.post("/v1/events/void", json=body, headers=writer).status_code == 403
    corrector = key_for(runtime, "acme", Permission.EVENTS_CORRECT)
    assert client.post("/v1/events/void", json=body, headers=corrector).status_code == 200


def test_the_seed_pages_show_a_void_at_once(client: TestClient, runtime: Runtime) -> None:
    """The tenant page (seats: 12 used) and Zenskar's, before any flush."""
    from . import test_seed_tenant as tenant

    tenant.setup(runtime)
    corrector = key_for(runtime, "acme", Permission.EVENTS_CORRECT)
    zenskar = {**key_for(runtime, "acme", Permission.ALL), "organisation": "acme"}
    zenskar_path = "/entitlements/customer/unique/tenant-7"

    def seats_used() -> tuple[Any, Any]:
        page = tenant.page(client, runtime)
        results = client.get(zenskar_path, headers=zenskar).json()["results"]
        (row,) = [r for r in results if r["entitlement"]["name"] == "seats"]
        return page["consumed"], row["total_quantity_used"]

    assert seats_used() == (12, 12)
    body = {"source": "tests", "id": "seats", "reason": "test traffic"}
    assert client.post("/v1/events/void", json=body, headers=corrector).status_code == 200
    assert seats_used() == (0, 0)
    runtime.flush.flush_all(utcnow())
    assert seats_used() == (0, 0)


def level_setup(rt: Runtime, aggregation: str) -> Any:
    """A MAX (or UNIQUE_COUNT) feature ``seats`` with three samples, flushed."""
    now = utcnow()
    extra = {"value_property": "user"} if aggregation == "UNIQUE_COUNT" else {}
    rt.catalog.create_feature(
        "acme", "seats", now=now - timedelta(days=30), aggregation=aggregation, **extra
    )
    ent = grant(
        rt,
        feature="seats",
        starts_at=now - timedelta(days=10),
        ends_at=now + timedelta(days=20),
        now=now,
    )
    samples = [("e1", "7", "ann"), ("e2", "12", "bob"), ("e3", "9", "ann")]
    rt.ingest.ingest(
        [
            {
                "specversion": "1.0",
                "id": event_id,
                "source": "tests",
                "type": "meterd.usage",
                "subject": "cust-1",
                "org": "acme",
                "time": (now - timedelta(minutes=3 - n)).isoformat(),
                "data": {"feature": "seats", "quantity": quantity, "user": user},
            }
            for n, (event_id, quantity, user) in enumerate(samples)
        ],
        now=now,
    )
    rt.flush.flush_all(now)
    return ent


def test_a_void_of_the_max_sample_agrees_everywhere(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    ent = level_setup(runtime, "MAX")
    assert [float(x) for x in figures(client, acme, ent, "seats")] == [12, 12, 12]
    body = {"source": "tests", "id": "e2", "reason": "a test sample"}
    voided = client.post("/v1/events/void", json=body, headers=acme)
    assert voided.status_code == 200, voided.text
    assert [p["quantity"] for p in voided.json()["parts"]] == ["-3"]
    assert [float(x) for x in figures(client, acme, ent, "seats")[:2]] == [9, 9]
    runtime.flush.flush_all(utcnow())
    assert [float(x) for x in figures(client, acme, ent, "seats")] == [9, 9, 9]
    assert client.post("/v1/events/void", json=body, headers=acme).status_code == 409


def test_an_amend_of_a_distinct_value_agrees_everywhere(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    ent = level_setup(runtime, "UNIQUE_COUNT")  # ann, bob, ann: 2
    assert [float(x) for x in figures(client, acme, ent, "seats")] == [2, 2, 2]
    body = {"source": "tests", "id": "e1", "reason": "was cy"}
    data = {"feature": "seats", "quantity": "1", "user": "cy"}
    amended = client.post("/v1/events/amend", json={**body, "data": data}, headers=acme)
    assert amended.status_code == 200, amended.text
    runtime.flush.flush_all(utcnow())
    assert [float(x) for x in figures(client, acme, ent, "seats")] == [3, 3, 3]  # ann (e3), bob, cy
