"""Every route of the API: it authenticates, and no key of another org can read or
change this org's data through it. The list of routes comes from the app itself,
so a new route is covered (or fails here) without anyone remembering to add it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.api.app import create_app
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.testing import event

from ..helpers import done_notification, grant

PUBLIC = {"/healthz", "/readyz"}
BODIES: dict[str, Any] = {
    "/v1/events": [event(event_id="x-org", org="acme")],
    "/v1/features": {"key": "stolen"},
    "/v1/plans": {"key": "stolen", "feature": "api_calls", "quantity": "1"},
    "/v1/entitlements": {"customer_id": "cust-1", "feature": "api_calls", "quantity": "1"},
    "/v1/api-keys": {"permissions": ["EVENTS:WRITE"]},
    "/v1/alert-rules": {"kind": "CONSUMED", "threshold": "1"},
    "/v1/webhook-endpoints": {"url": "https://stolen.example.com/"},
}


def routes() -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI spec, but the health checks."""
    app = create_app(lambda: None, publish_events=lambda _e: None)  # type: ignore[arg-type, return-value]
    return [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path not in PUBLIC
        for method in operations
    ]


def concrete(path: str, ids: dict[str, str]) -> str:
    return (
        path.replace("{entitlement_id}", ids["entitlement"])
        .replace("{plan_id}", ids["plan"])
        .replace("{customer_id}", "cust-1")
        .replace("{feature}", "api_calls")
        .replace("{key}", "api_calls")
        .replace("{tenantid}", "cust-1")
        .replace("{type}", "USERS")
        .replace("{key_id}", ids.get("key", "0" * 16))
        .replace("{dead_letter_id}", ids.get("dead_letter", str(uuid.UUID(int=0))))
        .replace("{hold_id}", ids.get("hold", str(uuid.UUID(int=0))))
        .replace("{rule_id}", ids.get("alert_rule", "ar_0000000000"))
        .replace("{endpoint_id}", ids.get("endpoint", str(uuid.UUID(int=0))))
        .replace("{notification_id}", ids.get("notification", "ntf_trn_0"))
    )


def body_for(path: str, ids: dict[str, str]) -> Any:
    if path == "/v1/dead-letters/replay":
        return {"ids": [ids["dead_letter"]]}
    if path.endswith("/rotate"):
        return {"old_valid_until": "2099-01-01T00:00:00Z"}
    if path.endswith("/settle"):
        return {"quantity": "1"}
    if path.endswith("/reserve"):
        return {"quantity": "1", "idempotency_key": "steal"}
    if path.endswith(("/suspend", "/resume", "/terminate", "/void", "/reset")):
        return {"reason": "stolen"}
    if path.endswith("/allotments"):
        return {"customer_id": "stolen", "quantity": "1"}
    if "{entitlement_id}" in path:
        return {"row_version": 1, "quantity": "999"}
    if "{plan_id}" in path:
        return {"row_version": 1, "is_active": False, "display_name": "stolen"}
    if "{key}" in path:
        return {"is_active": False, "name": "stolen"}
    return BODIES.get(path)


@pytest.fixture
def acme_data(runtime: Runtime, client: TestClient, acme: dict[str, str]) -> dict[str, str]:
    from meterd.core.domain import FeatureType

    runtime.catalog.create_feature("acme", "seats", now=utcnow(), type=FeatureType.USERS)
    ent = grant(runtime, quantity="10", feature="seats")
    now = utcnow()
    # dated from the real clock: the hold below is made through the API, on it
    grant(
        runtime,
        quantity="10",
        starts_at=now - timedelta(days=1),
        ends_at=now + timedelta(days=30),
        now=now,
    )
    plan = client.post(
        "/v1/plans", json={"key": "p", "feature": "api_calls", "quantity": "5"}, headers=acme
    ).json()
    runtime.ingest.ingest([event(quantity="4", event_id="u", time=now)], now=now)
    runtime.ingest.ingest([event(customer="nobody", event_id="dead", time=now)], now=now)
    letters = client.get("/v1/dead-letters", headers=acme).json()["data"]
    (letter,) = [dl for dl in letters if dl["event_id"] == "dead"]
    rule = client.post(
        "/v1/alert-rules", json={"kind": "PERCENT", "threshold": "90"}, headers=acme
    ).json()
    hold = client.post(
        "/v1/customers/cust-1/features/api_calls/reserve",
        json={"quantity": "2", "idempotency_key": "held", "hold_seconds": 600},
        headers=acme,
    ).json()["hold"]
    endpoint = client.post(
        "/v1/webhook-endpoints", json={"url": "https://hooks.example.com/"}, headers=acme
    ).json()
    return {
        "endpoint": endpoint["id"],
        "notification": done_notification(runtime),
        "hold": hold["id"],
        "entitlement": str(ent.id),
        "plan": plan["id"],
        "key": acme["x-api-key"].split("_")[1],
        "dead_letter": letter["id"],
        "alert_rule": rule["id"],
    }


ROUTES = routes()


def test_the_api_has_the_routes_this_test_knows_how_to_call() -> None:
    assert len(ROUTES) >= 20
    for _, path in ROUTES:
        assert concrete(path, {"entitlement": "e", "plan": "p"}).count("{") == 0, path


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_refuses_a_call_without_a_key(
    client: TestClient, acme_data: dict[str, str], method: str, path: str
) -> None:
    url = concrete(path, acme_data)
    response = client.request(method, url, json=body_for(path, acme_data))
    assert response.status_code == 401, (method, url, response.text)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_route_lets_another_org_read_or_change_this_orgs_data(
    client: TestClient,
    runtime: Runtime,
    acme: dict[str, str],
    globex: dict[str, str],
    acme_data: dict[str, str],
    method: str,
    path: str,
) -> None:
    before = snapshot(client, acme)
    url = concrete(path, acme_data)
    headers = {**globex, "organisation": "globex"}
    response = client.request(method, url, json=body_for(path, acme_data), headers=headers)
    assert response.status_code < 500
    if any(
        f"{{{name}}}" in path
        for name in (
            "entitlement_id",
            "plan_id",
            "key_id",
            "dead_letter_id",
            "hold_id",
            "rule_id",
            "endpoint_id",
            "notification_id",
        )
    ):
        # Another org's id is answered exactly like an id that does not exist.
        assert response.status_code == 404, (method, url, response.text[:300])
    if response.status_code < 400:  # an error body may echo the id the caller sent
        names = (
            "entitlement",
            "plan",
            "key",
            "dead_letter",
            "hold",
            "alert_rule",
            "endpoint",
            "notification",
        )
        for secret in (acme_data[name] for name in names):
            assert secret not in response.text, (method, url, response.text[:300])
    assert snapshot(client, acme) == before, (method, url)


def snapshot(client: TestClient, acme: dict[str, str]) -> Any:
    """Everything of acme's that a call could change."""
    entitlements = client.get("/v1/entitlements", headers=acme).json()["results"]
    return (
        [
            (e["id"], e["row_version"], e["quantity"], e["consumed"], e["status"])
            for e in entitlements
        ],
        [
            (f["key"], f["name"], f["is_active"])
            for f in client.get("/v1/features", headers=acme).json()
        ],
        [
            (p["key"], p["row_version"], p["is_active"])
            for p in client.get("/v1/plans", headers=acme).json()
        ],
        [
            Decimal(value[name])
            for value in [
                client.get("/v1/customers/cust-1/features/api_calls", headers=acme).json()
            ]
            for name in ("consumed", "held")
        ],
        [
            (d["id"], d["replayed_at"])
            for d in client.get("/v1/dead-letters", headers=acme).json()["data"]
        ],
        client.get("/v1/alert-rules", headers=acme).json(),
    )


def _consumed_and_held(client: TestClient, acme: dict[str, str]) -> tuple[Decimal, Decimal]:
    value = client.get("/v1/customers/cust-1/features/api_calls", headers=acme).json()
    return Decimal(value["consumed"]), Decimal(value["held"])
