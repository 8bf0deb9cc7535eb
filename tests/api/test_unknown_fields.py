"""Issue 20 (7.6): a field meterd does not know in one of its own request bodies is
a 400 that names it, on every write route, and changes nothing (Stripe answers
"Received unknown parameter"). Silently dropping it let a misspelt reserve option
consume at once, and an entitlement be created without an option this version
does not know. CloudEvents keep their free extension attributes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.api.app import create_app
from meterd.core.timeutil import isoformat, utcnow
from meterd.runtime import Runtime
from meterd.testing import event

from ..helpers import done_notification
from .conftest import Published

RESERVE = "/v1/customers/cust-1/features/api_calls/reserve"
UNKNOWN = "unknown_option"


def write_routes() -> list[tuple[str, str]]:
    """Every (method, path) of the spec that takes a JSON body, but event intake."""
    app = create_app(lambda: None, check_redis=False)  # type: ignore[arg-type, return-value]
    return sorted(
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if method in ("post", "patch", "put") and path != "/v1/events"
    )


#: A valid body for each write route (``{id}``: the entitlement, plan or key made
#: by ``ids``), and what must happen before it is sent.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/api-keys/{key_id}/rotate"): {
        "old_valid_until": isoformat(utcnow() + timedelta(days=1))
    },
    ("POST", "/v1/api-keys"): {"permissions": ["EVENTS:WRITE"]},
    ("POST", "/v1/alert-rules"): {"kind": "CONSUMED", "threshold": "5"},
    ("POST", "/v1/portal-tokens"): {"customer_id": "cust-1"},
    ("POST", "/v1/dead-letters/replay"): {"ids": ["00000000-0000-4000-8000-000000000000"]},
    ("POST", "/v1/dead-letters/{dead_letter_id}/replay"): {},
    ("POST", "/v1/features"): {"key": "seats"},
    ("PATCH", "/v1/features/{key}"): {"name": "API calls"},
    ("POST", "/v1/plans"): {"key": "gold", "feature": "api_calls", "quantity": "5"},
    ("PATCH", "/v1/plans/{plan_id}"): {"row_version": 1, "display_name": "Silver"},
    ("POST", "/v1/entitlements"): {"customer_id": "cust-2", "feature": "api_calls"},
    ("PATCH", "/v1/entitlements/{entitlement_id}"): {"row_version": 1, "priority": 2},
    ("POST", "/v1/entitlements/{entitlement_id}/suspend"): {"reason": "unpaid"},
    ("POST", "/v1/entitlements/{entitlement_id}/resume"): {"reason": "paid"},
    ("POST", "/v1/entitlements/{entitlement_id}/terminate"): {"reason": "churned"},
    ("POST", "/v1/entitlements/{entitlement_id}/void"): {"reason": "refund"},
    ("POST", "/v1/entitlements/{entitlement_id}/reset"): {"reason": "plan change"},
    ("POST", "/v1/entitlements/{entitlement_id}/allotments"): {
        "customer_id": "child-1",
        "quantity": "1",
    },
    ("POST", "/v1/customers/{customer_id}/features/{feature}/reserve"): {
        "quantity": "1",
        "idempotency_key": "r-1",
    },
    ("POST", "/v1/holds/{hold_id}/settle"): {"quantity": "1"},
    ("POST", "/v1/holds/{hold_id}/release"): {},
    ("POST", "/v1/events/void"): {"source": "tests", "id": "e1", "reason": "test"},
    ("POST", "/v1/webhook-endpoints"): {"url": "https://hooks.example.com/"},
    ("POST", "/v1/notifications/{notification_id}/redeliver"): {},
    ("POST", "/v1/events/amend"): {
        "source": "tests",
        "id": "e1",
        "reason": "typo",
        "data": {"feature": "api_calls", "quantity": "2"},
    },
}

WRITE_ROUTES = write_routes()


@pytest.fixture
def ids(client: TestClient, runtime: Runtime, acme: dict[str, str]) -> dict[str, str]:
    """An entitlement (open now), a plan, the key and a dead letter of acme, by path
    parameter."""
    made = client.post(
        "/v1/entitlements",
        json={"customer_id": "cust-1", "feature": "api_calls", "quantity": "100"},
        headers=acme,
    )
    plan = client.post(
        "/v1/plans", json={"key": "p", "feature": "api_calls", "quantity": "5"}, headers=acme
    )
    assert made.status_code == 201 and plan.status_code == 201, (made.text, plan.text)
    runtime.ingest.ingest([event(customer="nobody", event_id="dead")], now=utcnow())
    (letter,) = client.get("/v1/dead-letters", headers=acme).json()["data"]
    hold = client.post(
        RESERVE, json={"quantity": "2", "idempotency_key": "h", "hold_seconds": 600}, headers=acme
    ).json()["hold"]
    return {
        "{notification_id}": done_notification(runtime),
        "{hold_id}": hold["id"],
        "{dead_letter_id}": letter["id"],
        "{entitlement_id}": made.json()["id"],
        "{plan_id}": plan.json()["id"],
        "{key_id}": acme["x-api-key"].split("_")[1],
        "{key}": "api_calls",
        "{customer_id}": "cust-1",
        "{feature}": "api_calls",
    }


def concrete(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace(name, value)
    return path


def state(client: TestClient, acme: dict[str, str]) -> Any:
    """Everything of acme's a write route could change."""
    return [
        client.get(path, headers=acme).json()
        for path in ("/v1/entitlements", "/v1/features", "/v1/plans", "/v1/api-keys",
                     "/v1/customers/cust-1/features/api_calls", "/v1/alert-rules")
    ]  # fmt: skip


def prepare(client: TestClient, acme: dict[str, str], url: str, runtime: Runtime) -> None:
    if url.endswith("/resume"):  # only a suspended entitlement resumes
        suspended = client.post(url.replace("/resume", "/suspend"), headers=acme)
        assert suspended.status_code == 200, suspended.text
    if url.endswith("/redeliver"):  # a notification is redelivered to an endpoint
        made = client.post(
            "/v1/webhook-endpoints", json={"url": "https://hooks.example.com/"}, headers=acme
        )
        assert made.status_code == 201, made.text
    if url in ("/v1/events/void", "/v1/events/amend"):  # only an accepted event is corrected
        runtime.ingest.ingest([event(event_id="e1", time=utcnow())], now=utcnow())


@pytest.mark.parametrize(("method", "path"), WRITE_ROUTES)
def test_an_unknown_field_is_a_400_naming_it_and_changes_nothing(
    client: TestClient,
    runtime: Runtime,
    acme: dict[str, str],
    ids: dict[str, str],
    method: str,
    path: str,
) -> None:
    url = concrete(path, ids)
    prepare(client, acme, url, runtime)
    before = state(client, acme)
    body = {**BODIES[(method, path)], UNKNOWN: True}
    response = client.request(method, url, json=body, headers=acme)
    assert response.status_code == 400, (method, path, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    detail = response.json()["detail"]
    assert detail == f"{UNKNOWN}: unknown field (check its spelling; nothing was changed)"
    assert state(client, acme) == before
    # The same body without the unknown field is taken: the field alone was refused.
    taken = client.request(method, url, json=BODIES[(method, path)], headers=acme)
    assert taken.status_code in (200, 201), (method, path, taken.text)


def test_every_unknown_field_is_named(client: TestClient, acme: dict[str, str]) -> None:
    body = {"customer_id": "c", "feature": "api_calls", "auto_renwe": True, "qty": "5"}
    response = client.post("/v1/entitlements", json=body, headers=acme)
    detail = response.json()["detail"]
    assert response.status_code == 400 and "auto_renwe: unknown field" in detail
    assert "qty: unknown field" in detail


def test_an_entitlement_with_an_option_this_version_does_not_know_is_not_created(
    client: TestClient, acme: dict[str, str]
) -> None:
    body = {"customer_id": "c", "feature": "api_calls", "quantity": "5", "rollover": True}
    response = client.post("/v1/entitlements", json=body, headers=acme)
    assert response.status_code == 400 and "rollover" in response.json()["detail"]
    assert client.get("/v1/entitlements", headers=acme).json()["total_count"] == 0


@pytest.fixture
def reservable(client: TestClient, acme: dict[str, str]) -> Callable[[], str]:
    made = client.post(
        "/v1/entitlements",
        json={"customer_id": "cust-1", "feature": "api_calls", "quantity": "10"},
        headers=acme,
    )
    assert made.status_code == 201, made.text

    def consumed() -> str:
        value = client.get("/v1/customers/cust-1/features/api_calls", headers=acme).json()
        text: str = value["consumed"]
        return text

    return consumed


def test_a_reserve_with_a_misspelt_option_consumes_nothing(
    client: TestClient, acme: dict[str, str], reservable: Callable[[], str]
) -> None:
    body = {"quantity": "5", "idempotency_key": "k", "entitlment_id": "x"}
    response = client.post(RESERVE, json=body, headers=acme)
    assert response.status_code == 400 and "entitlment_id: unknown field" in response.text
    assert reservable() == "0"


def test_an_unknown_field_inside_the_attributes_is_named_with_its_path(
    client: TestClient, acme: dict[str, str]
) -> None:
    body = {"customer_id": "c", "feature": "api_calls", "attributes": {"smartLogin": True}}
    response = client.post("/v1/entitlements", json=body, headers=acme)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("attributes.smartLogin: unknown field")


def test_only_meterds_own_fields_are_closed_a_reservations_data_stays_free(
    client: TestClient, acme: dict[str, str], reservable: Callable[[], str]
) -> None:
    data = {"model": "x", "anything": 1}
    refused = {"quantity": "2", "idempotency_key": "k", "data": data, "dry_run": True}
    assert client.post(RESERVE, json=refused, headers=acme).status_code == 400
    body = {"quantity": "2", "idempotency_key": "k", "data": data}
    response = client.post(RESERVE, json=body, headers=acme)
    assert response.status_code == 200 and response.json()["granted"] is True
    assert reservable() == "2"


def test_cloudevents_keep_their_extension_attributes_where_reserve_refuses_them(
    client: TestClient, acme: dict[str, str], published: Published, reservable: Callable[[], str]
) -> None:
    cloud_event = {**event(event_id="e1", time=utcnow()), "traceparent": "00-abc", "region": "eu"}
    response = client.post("/v1/events", json=[cloud_event], headers=acme)
    assert response.status_code == 202 and response.json()["queued"] == 1, response.text
    assert published.events[0]["region"] == "eu"
    body = {"quantity": "1", "idempotency_key": "k", "region": "eu"}
    assert client.post(RESERVE, json=body, headers=acme).status_code == 400
