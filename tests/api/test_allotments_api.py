"""``POST|GET /v1/entitlements/{id}/allotments`` (issue 23 item 5): the child grant
over HTTP, its permissions, the 409 past remaining, the idempotent retry, the list
with ``allotted`` and ``remaining``, the value read's ``allotted``, and the tenant
page's ``smsVoice.allotment``."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient

from meterd.core.domain import FeatureType
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

from ..helpers import grant
from .conftest import key_for


def parent(rt: Runtime, quantity: str = "100", **extra: Any) -> str:
    now = utcnow()
    return str(
        grant(
            rt,
            "provider",
            quantity,
            starts_at=now - timedelta(days=1),
            ends_at=now + timedelta(days=29),
            now=now,
            **extra,
        ).id
    )


def allot(client: TestClient, headers: dict[str, str], ent: str, **body: Any) -> Any:
    return client.post(f"/v1/entitlements/{ent}/allotments", json=body, headers=headers)


def test_an_allotment_creates_the_child_and_the_list_shows_it(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    ent = parent(runtime)
    made = allot(client, acme, ent, customer_id="child-1", quantity="30")
    assert made.status_code == 201, made.text
    child = made.json()
    assert (child["customer_id"], child["parent_id"], child["quantity"]) == (
        "child-1",
        ent,
        "30",
    )
    assert child["remaining"] == "30"
    assert client.get(f"/v1/entitlements/{ent}", headers=acme).json()["remaining"] == "70"
    value = client.get("/v1/customers/provider/features/api_calls", headers=acme).json()
    assert value["remaining"] == "70"
    listed = client.get(f"/v1/entitlements/{ent}/allotments", headers=acme).json()
    assert (listed["allotted"], listed["remaining"]) == ("30", "70")
    [row] = listed["results"]
    assert (row["entitlement_id"], row["customer_id"], row["quantity"], row["status"]) == (
        child["id"],
        "child-1",
        "30",
        "ACTIVE",
    )


def test_the_value_read_shows_allotted_at_both_levels(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    ent = parent(runtime)
    assert allot(client, acme, ent, customer_id="child-1", quantity="30").status_code == 201
    assert allot(client, acme, ent, customer_id="child-2", quantity="2.5").status_code == 201
    value = client.get("/v1/customers/provider/features/api_calls", headers=acme).json()
    assert (value["allotted"], value["remaining"]) == ("32.5", "67.5")
    [row] = value["entitlements"]
    assert (row["entitlement_id"], row["allotted"], row["remaining"]) == (ent, "32.5", "67.5")
    kid = client.get("/v1/customers/child-1/features/api_calls", headers=acme).json()
    assert (kid["allotted"], kid["entitlements"][0]["allotted"]) == (None, None)


def test_more_than_remains_is_a_409(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    ent = parent(runtime, "10")
    refused = allot(client, acme, ent, customer_id="child-1", quantity="10.5")
    assert refused.status_code == 409, refused.text
    assert allot(client, acme, ent, customer_id="child-1", quantity="10").status_code == 201
    assert allot(client, acme, ent, customer_id="child-2", quantity="1").status_code == 409


def test_a_retry_with_the_same_key_answers_the_same_child(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    ent = parent(runtime)
    body = {"customer_id": "child-1", "quantity": "30", "idempotency_key": "k-1"}
    first = allot(client, acme, ent, **body)
    again = allot(client, acme, ent, **body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert client.get(f"/v1/entitlements/{ent}", headers=acme).json()["remaining"] == "70"
    other = allot(client, acme, ent, **{**body, "quantity": "31"})
    assert other.status_code == 409, other.text


def test_permissions_and_other_orgs(
    client: TestClient, runtime: Runtime, acme: dict[str, str], globex: dict[str, str]
) -> None:
    ent = parent(runtime)
    viewer = key_for(runtime, "acme", Permission.ENTITLEMENTS_VIEW)
    assert allot(client, viewer, ent, customer_id="child-1", quantity="1").status_code == 403
    assert client.get(f"/v1/entitlements/{ent}/allotments", headers=viewer).status_code == 200
    assert allot(client, globex, ent, customer_id="child-1", quantity="1").status_code == 404
    assert client.get(f"/v1/entitlements/{ent}/allotments", headers=globex).status_code == 404
    listed = client.get(f"/v1/entitlements/{ent}/allotments", headers=acme).json()
    assert listed["results"] == []


def test_the_tenant_page_shows_what_the_children_hold(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    runtime.catalog.create_feature("acme", "seats", now=utcnow(), type=FeatureType.USERS)
    runtime.catalog.create_feature("acme", "sms_voice", now=utcnow(), type=FeatureType.CREDITS)
    now = utcnow()
    dated: dict[str, Any] = {
        "starts_at": now - timedelta(days=1),
        "ends_at": now + timedelta(days=29),
        "now": now,
    }
    grant(runtime, "provider", "5", feature="seats", **dated)
    sms = grant(runtime, "provider", "500", feature="sms_voice", allotment=Decimal(100), **dated)
    path = "/api/web/v4/tenants/provider/entitlements/USERS"
    viewer = key_for(runtime, "acme", Permission.SPENTITLEMENTS_VIEW)
    assert client.get(path, headers=viewer).json()["smsVoice"]["allotment"] == 100
    for n, quantity in enumerate(("20", "25")):
        made = allot(client, acme, str(sms.id), customer_id=f"child-{n}", quantity=quantity)
        assert made.status_code == 201, made.text
    shown = client.get(path, headers=viewer).json()["smsVoice"]
    assert (shown["allotment"], shown["quantity"]) == (45, 455)
