"""POST/PATCH /v1/entitlements: ``allotment`` and ``attributes`` (the tenant page's own
fields) are set, stored and validated. ``allotment`` is read back on the native
routes; ``attributes`` are not (only the tenant page shows them, see
test_seed_tenant.py), so these tests read the stored object."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from meterd.runtime import Runtime

from ..conftest import NOW

ATTRIBUTES: dict[str, Any] = {
    "faceRecognitionType": "ENHANCED",
    "serviceBundles": [{"bundleType": "PROFESSIONAL", "rank": 2, "usageReportId": "r-9"}],
    "addOn": "printerCert",
    "additionalFeatures": {"enhancedGeoLocation": True},
    "smartLoginEnabled": False,
    "userBundles": [{"bundleType": "CONSUMER"}],
}


def post(client: TestClient, headers: dict[str, str], **fields: Any) -> Any:
    body = {"customer_id": "cust-1", "feature": "api_calls", "quantity": "10", **fields}
    return client.post("/v1/entitlements", json=body, headers=headers)


def create(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = post(client, headers, **fields)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def patch(client: TestClient, headers: dict[str, str], made: dict[str, Any], **fields: Any) -> Any:
    body = {"row_version": made["row_version"], **fields}
    return client.patch(f"/v1/entitlements/{made['id']}", json=body, headers=headers)


def stored(runtime: Runtime, made: dict[str, Any]) -> dict[str, Any]:
    """The entitlement's attributes as stored (the fields given, nothing else)."""
    ent, _, _ = runtime.queries.get("acme", uuid.UUID(made["id"]), NOW)
    attributes: dict[str, Any] = ent.attributes
    return attributes


def test_attributes_given_at_creation_are_stored(
    client: TestClient, acme: dict[str, str], runtime: Runtime
) -> None:
    made = create(client, acme, attributes=ATTRIBUTES)
    assert stored(runtime, made) == ATTRIBUTES


def test_native_entitlement_reads_do_not_return_the_attributes(
    client: TestClient, acme: dict[str, str]
) -> None:
    made = create(client, acme, attributes=ATTRIBUTES)
    assert "attributes" not in made
    got = client.get(f"/v1/entitlements/{made['id']}", headers=acme).json()
    listed = client.get("/v1/entitlements", headers=acme).json()["results"]
    assert "attributes" not in got and all("attributes" not in row for row in listed)


def test_the_native_entitlement_schema_has_no_attributes(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "attributes" not in schemas["EntitlementOut"]["properties"]
    assert "attributes" in schemas["EntitlementIn"]["properties"]


def test_an_entitlement_created_without_attributes_has_none(
    client: TestClient, acme: dict[str, str], runtime: Runtime
) -> None:
    assert stored(runtime, create(client, acme)) == {}


def test_allotment_is_set_at_creation(client: TestClient, acme: dict[str, str]) -> None:
    assert create(client, acme, allotment="100")["allotment"] == "100"


def test_allotment_is_changed_and_cleared_by_patch(
    client: TestClient, acme: dict[str, str]
) -> None:
    made = create(client, acme, allotment="100")
    changed = patch(client, acme, made, allotment="40.5").json()
    assert changed["allotment"] == "40.5"
    assert patch(client, acme, changed, allotment=None).json()["allotment"] is None


def test_patch_replaces_the_whole_attributes_object(
    client: TestClient, acme: dict[str, str], runtime: Runtime
) -> None:
    made = create(client, acme, attributes=ATTRIBUTES)
    changed = patch(client, acme, made, attributes={"addOn": "fleetOptIn"})
    assert changed.status_code == 200, changed.text
    assert stored(runtime, made) == {"addOn": "fleetOptIn"}


def test_patch_with_null_attributes_clears_them(
    client: TestClient, acme: dict[str, str], runtime: Runtime
) -> None:
    made = create(client, acme, attributes=ATTRIBUTES)
    assert patch(client, acme, made, attributes=None).status_code == 200
    assert stored(runtime, made) == {}


def test_a_patch_leaving_attributes_out_keeps_them(
    client: TestClient, acme: dict[str, str], runtime: Runtime
) -> None:
    made = create(client, acme, attributes={"smartLoginEnabled": True})
    assert patch(client, acme, made, priority=3).status_code == 200
    assert stored(runtime, made) == {"smartLoginEnabled": True}


def test_an_unknown_attribute_is_400(client: TestClient, acme: dict[str, str]) -> None:
    response = post(client, acme, attributes={"colour": "blue"})
    assert response.status_code == 400 and "colour" in response.text


def test_an_attribute_of_the_wrong_type_is_400(client: TestClient, acme: dict[str, str]) -> None:
    response = post(client, acme, attributes={"smartLoginEnabled": "maybe"})
    assert response.status_code == 400


def test_a_face_recognition_type_outside_the_page_values_is_400(
    client: TestClient, acme: dict[str, str]
) -> None:
    response = post(client, acme, attributes={"faceRecognitionType": "BASIC"})
    assert response.status_code == 400


def test_a_bundle_type_outside_the_page_values_is_400(
    client: TestClient, acme: dict[str, str]
) -> None:
    response = post(client, acme, attributes={"userBundles": [{"bundleType": "GOLD"}]})
    assert response.status_code == 400


def test_a_bundle_without_its_type_is_400(client: TestClient, acme: dict[str, str]) -> None:
    response = post(client, acme, attributes={"serviceBundles": [{"rank": 1}]})
    assert response.status_code == 400


def test_an_unknown_field_inside_a_bundle_is_400(client: TestClient, acme: dict[str, str]) -> None:
    bundle = {"bundleType": "API", "price": 3}
    assert post(client, acme, attributes={"userBundles": [bundle]}).status_code == 400


def test_an_add_on_with_control_characters_is_400(client: TestClient, acme: dict[str, str]) -> None:
    assert post(client, acme, attributes={"addOn": "a\x00b"}).status_code == 400


def test_a_negative_allotment_is_400(client: TestClient, acme: dict[str, str]) -> None:
    assert post(client, acme, allotment="-1").status_code == 400


def test_allotment_and_attributes_with_a_plan_id_are_400(
    client: TestClient, acme: dict[str, str], runtime: Runtime
) -> None:
    plan = client.post(
        "/v1/plans", json={"key": "p", "feature": "api_calls", "quantity": "5"}, headers=acme
    )
    assert plan.status_code == 201, plan.text
    for extra in ({"allotment": "3"}, {"attributes": {"addOn": "x"}}):
        body = {"customer_id": "c", "plan_id": plan.json()["id"], **extra}
        response = client.post("/v1/entitlements", json=body, headers=acme)
        assert response.status_code == 400 and "PATCH" in response.text


def test_stored_attributes_hold_only_the_fields_given(
    client: TestClient, acme: dict[str, str], runtime: Runtime
) -> None:
    made = create(client, acme, attributes={"userBundles": [{"bundleType": "API"}]})
    assert stored(runtime, made) == {"userBundles": [{"bundleType": "API"}]}
