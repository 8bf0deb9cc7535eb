"""``POST /v1/entitlements`` with a ``plan_id``: the plan gives feature, quantity,
end, term, renewal, billing type, contract mode and grace; any of them given beside
it is a 400 naming them (never silently ignored). Priority is bounded by the
catalog (the column is a 32-bit integer on PostgreSQL), as the schema states."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.services.catalog.rules import FROM_PLAN, MAX_PRIORITY
from tests.helpers import detail_of


@pytest.fixture
def plan_id(client: TestClient, acme: dict[str, str]) -> str:
    plan = client.post(
        "/v1/plans", json={"key": "p", "feature": "api_calls", "quantity": "5"}, headers=acme
    )
    assert plan.status_code == 201, plan.text
    found: str = plan.json()["id"]
    return found


GIVEN: dict[str, Any] = {
    "feature": "api_calls",
    "quantity": "10",
    "ends_at": "2030-01-01T00:00:00Z",
    "term_value": 1,
    "term_unit": "MONTH",
    "auto_renew": False,
    "renewal_quantity": "10",
    "billing_type": "PRE_PAID",
    "contract_mode": "PRODUCTION",
    "grace_days": 0,
    "rollover_max": "5",
    "rollover_min": "1",
}


def test_every_field_a_plan_gives_is_listed() -> None:
    assert set(GIVEN) == set(FROM_PLAN)


@pytest.mark.parametrize("field", sorted(GIVEN))
def test_a_field_the_plan_gives_beside_a_plan_id_is_400_naming_it(
    client: TestClient, acme: dict[str, str], plan_id: str, field: str
) -> None:
    body = {"customer_id": "c", "plan_id": plan_id, field: GIVEN[field]}
    detail = detail_of(client.post("/v1/entitlements", json=body, headers=acme))
    assert detail.startswith(f"{field}: not taken with a plan"), detail


def test_several_fields_beside_a_plan_id_are_all_named(
    client: TestClient, acme: dict[str, str], plan_id: str
) -> None:
    body = {"customer_id": "c", "plan_id": plan_id, "quantity": "1", "grace_days": 3}
    detail = detail_of(client.post("/v1/entitlements", json=body, headers=acme))
    assert detail.startswith("quantity, grace_days: not taken with a plan"), detail


def test_a_plan_id_with_what_it_leaves_to_the_caller_makes_an_entitlement(
    client: TestClient, acme: dict[str, str], plan_id: str
) -> None:
    body = {"customer_id": "c", "plan_id": plan_id, "priority": 3, "contract_id": "k-1"}
    made = client.post("/v1/entitlements", json=body, headers=acme)
    assert made.status_code == 201, made.text
    assert (made.json()["quantity"], made.json()["priority"]) == ("5", 3)


def test_the_priority_bound_is_the_catalogs(
    client: TestClient, acme: dict[str, str], plan_id: str
) -> None:
    body = {"customer_id": "c", "plan_id": plan_id, "priority": MAX_PRIORITY + 1}
    assert client.post("/v1/entitlements", json=body, headers=acme).status_code == 400
    body["priority"] = -MAX_PRIORITY
    assert client.post("/v1/entitlements", json=body, headers=acme).status_code == 201
