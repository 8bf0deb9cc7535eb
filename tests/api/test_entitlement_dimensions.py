"""Entitlement dimensions (``filters``): given on create, checked, fixed after creation,
and shown by every endpoint that lists the entitlement, each in its page's style."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

from ..helpers import detail_of
from .conftest import key_for

FILTERS = {"model": "gpt-4o", "region.zone": 3, "cached": True}
WORKSPACE = "/api/workspace/entitlement-operations/entitlements"


def create(client: TestClient, acme: dict[str, str], **body: Any) -> Any:
    return client.post(
        "/v1/entitlements",
        json={"customer_id": "cust-1", "feature": "api_calls", "quantity": "10", **body},
        headers=acme,
    )


def created(client: TestClient, acme: dict[str, str], **body: Any) -> dict[str, Any]:
    response = create(client, acme, **body)
    assert response.status_code == 201, response.text
    found: dict[str, Any] = response.json()
    return found


def test_filters_given_on_create_are_in_the_response(
    client: TestClient, acme: dict[str, str]
) -> None:
    assert created(client, acme, filters=FILTERS)["filters"] == FILTERS


def test_an_entitlement_without_filters_shows_null(
    client: TestClient, acme: dict[str, str]
) -> None:
    assert created(client, acme)["filters"] is None
    assert created(client, acme, customer_id="cust-2", filters={})["filters"] is None


def test_filters_are_shown_by_the_native_get_and_list(
    client: TestClient, acme: dict[str, str]
) -> None:
    ent = created(client, acme, filters=FILTERS)
    assert client.get(f"/v1/entitlements/{ent['id']}", headers=acme).json()["filters"] == FILTERS
    (listed,) = client.get("/v1/entitlements", headers=acme).json()["results"]
    assert listed["filters"] == FILTERS


def test_filters_are_shown_per_entitlement_by_the_value_endpoint(
    client: TestClient, acme: dict[str, str]
) -> None:
    with_filters = created(client, acme, filters=FILTERS)
    without = created(client, acme)
    value = client.get("/v1/customers/cust-1/features/api_calls", headers=acme).json()
    shown = {e["entitlement_id"]: e["filters"] for e in value["entitlements"]}
    assert shown == {with_filters["id"]: FILTERS, without["id"]: None}


def test_filters_are_shown_by_the_reserve_response(
    client: TestClient, acme: dict[str, str]
) -> None:
    created(client, acme, filters=FILTERS)
    response = client.post(
        "/v1/customers/cust-1/features/api_calls/reserve",
        json={"quantity": "1", "idempotency_key": "k-1"},
        headers=acme,
    )
    assert response.status_code == 200, response.text
    (entitlement,) = response.json()["value"]["entitlements"]
    assert entitlement["filters"] == FILTERS


def test_a_reservation_with_data_is_taken_by_the_grant_its_data_matches(
    client: TestClient, acme: dict[str, str]
) -> None:
    gpt = created(client, acme, filters={"model": "gpt-4o"})
    o3 = created(client, acme, filters={"model": "o3"})
    response = client.post(
        "/v1/customers/cust-1/features/api_calls/reserve",
        json={"quantity": "3", "idempotency_key": "k-1", "data": {"model": "o3"}},
        headers=acme,
    )
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "granted"
    used = {e["entitlement_id"]: e["consumed"] for e in response.json()["value"]["entitlements"]}
    assert used == {gpt["id"]: "0", o3["id"]: "3"}


def test_reservation_data_must_be_an_object(client: TestClient, acme: dict[str, str]) -> None:
    created(client, acme, filters={"model": "o3"})
    response = client.post(
        "/v1/customers/cust-1/features/api_calls/reserve",
        json={"quantity": "3", "idempotency_key": "k-1", "data": ["o3"]},
        headers=acme,
    )
    assert response.status_code == 400, response.text
    assert detail_of(response).startswith("data:")


def test_the_zenskar_page_shows_the_distinct_filters_of_the_grants_summed(
    client: TestClient, acme: dict[str, str]
) -> None:
    created(client, acme, filters={"model": "gpt-4o"})
    created(client, acme, filters={"model": "gpt-4o"})
    created(client, acme, filters={"model": "o3"})
    created(client, acme)
    response = client.get(
        "/entitlements/customer/unique/cust-1", headers={**acme, "organisation": "acme"}
    )
    assert response.status_code == 200, response.text
    (group,) = response.json()["results"]
    assert group["filters"] == [{"model": "gpt-4o"}, {"model": "o3"}]
    assert group["total_quantity"] == 40


def test_the_workspace_page_shows_filters_in_pascal_case(
    client: TestClient, acme: dict[str, str]
) -> None:
    created(client, acme, filters=FILTERS)
    response = client.get(WORKSPACE, headers=acme)
    assert response.status_code == 200, response.text
    (row,) = response.json()["Data"]["Items"]
    assert row["Filters"] == FILTERS


def test_the_tenant_page_shows_the_filters_of_the_grant_shown(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    client.post("/v1/features", json={"key": "seats", "type": "USERS"}, headers=acme)
    created(client, acme, customer_id="tenant-7", feature="seats", filters={"tier": "gold"})
    client.post("/v1/features", json={"key": "printer"}, headers=acme)
    created(client, acme, customer_id="tenant-7", feature="printer", filters={"site": 4})
    viewer = key_for(runtime, "acme", Permission.SPENTITLEMENTS_VIEW)
    response = client.get("/api/web/v4/tenants/tenant-7/entitlements/USERS", headers=viewer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["filters"], body["printer"]["filters"]) == ({"tier": "gold"}, {"site": 4})


def test_the_tenant_page_leaves_filters_out_when_the_grant_has_none(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    client.post("/v1/features", json={"key": "seats", "type": "USERS"}, headers=acme)
    created(client, acme, customer_id="tenant-7", feature="seats")
    viewer = key_for(runtime, "acme", Permission.SPENTITLEMENTS_VIEW)
    body = client.get("/api/web/v4/tenants/tenant-7/entitlements/USERS", headers=viewer).json()
    assert "filters" not in body


def test_a_filter_key_is_stored_without_a_leading_dollar_dot(
    client: TestClient, acme: dict[str, str]
) -> None:
    assert created(client, acme, filters={"$.region.zone": "eu-1"})["filters"] == {
        "region.zone": "eu-1"
    }


def test_an_integer_filter_stays_an_integer_and_a_boolean_a_boolean(
    client: TestClient, acme: dict[str, str]
) -> None:
    ent = created(client, acme, filters={"tier": 1, "beta": True})
    read = client.get(f"/v1/entitlements/{ent['id']}", headers=acme).json()["filters"]
    assert read == {"tier": 1, "beta": True}
    assert type(read["tier"]) is int and read["beta"] is True


@pytest.mark.parametrize(
    ("filters", "reason"),
    [
        ({"a b": "x"}, "filters property 'a b' is not a dotted path"),
        ({"usage..tokens": "x"}, "is not a dotted path"),
        ({"model": "x" * 201}, "filters['model'] must be text (at most 200 printable"),
        ({"model": "tab\there"}, "filters['model'] must be text"),
        ({"n": 2**53}, "filters['n'] must be text"),
        ({f"k{i}": i for i in range(17)}, "filters: Dictionary should have at most 16 items"),
    ],
    ids=["space", "empty-segment", "long-text", "control-character", "huge-int", "17-keys"],
)
def test_filters_that_cannot_be_matched_are_400_with_the_reason(
    client: TestClient, acme: dict[str, str], filters: dict[str, Any], reason: str
) -> None:
    assert reason in detail_of(create(client, acme, filters=filters))
    assert client.get("/v1/entitlements", headers=acme).json()["total_count"] == 0


@pytest.mark.parametrize("value", [1.5, None, ["a"], {"nested": "x"}])
def test_a_filter_value_that_is_not_text_an_integer_or_a_boolean_is_400(
    client: TestClient, acme: dict[str, str], value: Any
) -> None:
    assert detail_of(create(client, acme, filters={"model": value})).startswith("filters.model")


def test_filters_cannot_change_after_creation(client: TestClient, acme: dict[str, str]) -> None:
    ent = created(client, acme, filters={"model": "gpt-4o"})
    response = client.patch(
        f"/v1/entitlements/{ent['id']}",
        json={"row_version": ent["row_version"], "filters": {"model": "o3"}},
        headers=acme,
    )
    assert "fixed at creation" in detail_of(response)
    read = client.get(f"/v1/entitlements/{ent['id']}", headers=acme).json()
    assert (read["filters"], read["row_version"]) == ({"model": "gpt-4o"}, ent["row_version"])


def test_filters_cannot_be_added_after_creation(client: TestClient, acme: dict[str, str]) -> None:
    ent = created(client, acme)
    response = client.patch(
        f"/v1/entitlements/{ent['id']}",
        json={"row_version": ent["row_version"], "filters": {"model": "o3"}},
        headers=acme,
    )
    assert "fixed at creation" in detail_of(response)


def test_a_patch_repeating_the_filters_still_changes_the_quantity(
    client: TestClient, acme: dict[str, str]
) -> None:
    ent = created(client, acme, filters={"model": "gpt-4o"})
    response = client.patch(
        f"/v1/entitlements/{ent['id']}",
        json={"row_version": ent["row_version"], "filters": {"model": "gpt-4o"}, "quantity": "20"},
        headers=acme,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["quantity"], response.json()["filters"]) == ("20", {"model": "gpt-4o"})


def plan_id(client: TestClient, acme: dict[str, str]) -> str:
    body = {"key": "pro", "feature": "api_calls", "quantity": "100"}
    response = client.post("/v1/plans", json=body, headers=acme)
    assert response.status_code == 201, response.text
    found: str = response.json()["id"]
    return found


def test_an_entitlement_from_a_plan_has_no_filters_unless_given(
    client: TestClient, acme: dict[str, str]
) -> None:
    plan = plan_id(client, acme)
    response = client.post(
        "/v1/entitlements", json={"customer_id": "cust-1", "plan_id": plan}, headers=acme
    )
    assert response.status_code == 201, response.text
    assert response.json()["filters"] is None


def test_an_entitlement_from_a_plan_takes_the_filters_given(
    client: TestClient, acme: dict[str, str]
) -> None:
    plan = plan_id(client, acme)
    body = {"customer_id": "cust-1", "plan_id": plan, "filters": {"model": "o3"}}
    response = client.post("/v1/entitlements", json=body, headers=acme)
    assert response.status_code == 201, response.text
    assert (response.json()["filters"], response.json()["quantity"]) == ({"model": "o3"}, "100")


def test_the_openapi_schemas_show_the_filters(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("EntitlementIn", "EntitlementOut", "EntitlementPatch", "EntitlementValue"):
        assert "filters" in schemas[name]["properties"], name
    assert "filters" in schemas["EntitlementCustomerSumResponseSchema"]["properties"]
    assert "filters" in schemas["TenantEntitlement"]["properties"]
