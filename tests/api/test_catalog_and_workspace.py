"""Features and plans over /v1, and the workspace runtime-entitlements seed page."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

from .conftest import key_for

WORKSPACE = "/api/workspace/entitlement-operations/entitlements"


def post(client: TestClient, path: str, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def day(moment: datetime) -> str:
    """A midnight as a request writes it."""
    return f"{moment:%Y-%m-%d}T00:00:00Z"


def shown(moment: datetime) -> str:
    """A midnight as a response writes it."""
    return f"{moment:%Y-%m-%d}T00:00:00.000000Z"


def catalog_dates() -> dict[str, datetime]:
    """The grants' dates, relative to today, so that each grant has the same state on
    whatever day the suite runs (fixed dates expire: a trial from a fixed day ends 14
    days later). Alpha's yearly term began about ten months ago, on a 15th (a year later
    is the same day of the month); beta's 14-day trial began two days ago."""
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    alpha_starts = (today - timedelta(days=300)).replace(day=15)
    beta_starts = today - timedelta(days=2)
    return {
        "alpha_starts": alpha_starts,
        "alpha_ends": alpha_starts.replace(year=alpha_starts.year + 1),
        "beta_starts": beta_starts,
        "beta_ends": beta_starts + timedelta(days=14),
    }


def catalog(client: TestClient, acme: dict[str, str]) -> dict[str, Any]:
    """A USERS feature, two plans (yearly auto-renew in family gold; a trial), three grants
    (alpha on the yearly plan, beta on the trial, gamma from now on); ``dates`` holds
    their dates (see ``catalog_dates``)."""
    dates = catalog_dates()
    post(client, "/v1/features", acme, key="seats", name="Seats", type="USERS", units="users")
    yearly = post(client, "/v1/plans", acme, key="pro-yearly", feature="seats", quantity="50",
                  display_name="Pro yearly", term_value=1, term_unit="YEAR", auto_renew=True,
                  grace_days=7, families=["gold", "legacy"])  # fmt: skip
    trial = post(client, "/v1/plans", acme, key="trial", feature="seats", quantity="5",
                 display_name="Trial", term_value=14, term_unit="DAY",
                 contract_mode="TRIAL")  # fmt: skip
    a = post(client, "/v1/entitlements", acme, customer_id="alpha", plan_id=yearly["id"],
             starts_at=day(dates["alpha_starts"]))  # fmt: skip
    b = post(client, "/v1/entitlements", acme, customer_id="beta", plan_id=trial["id"],
             starts_at=day(dates["beta_starts"]))  # fmt: skip
    c = post(client, "/v1/entitlements", acme, customer_id="gamma", feature="api_calls",
             quantity="10")  # fmt: skip
    return {"yearly": yearly, "trial": trial, "a": a, "b": b, "c": c, "dates": dates}


def workspace(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get(WORKSPACE, params=params, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def owners(body: dict[str, Any]) -> list[str]:
    return [item["Owner"]["EntityInstanceId"] for item in body["Data"]["Items"]]


def test_a_plan_derives_its_term_kind_and_condition_family(
    client: TestClient, acme: dict[str, str]
) -> None:
    made = catalog(client, acme)
    yearly, trial = made["yearly"], made["trial"]
    assert (yearly["term_kind"], yearly["condition_family"]) == (2, 1)  # RENEWING, QUANTITY
    assert (trial["term_kind"], trial["condition_family"]) == (3, 3)  # TRIAL, TRIAL_QUANTITY
    assert [f["key"] for f in yearly["families"]] == ["gold", "legacy"]


def test_an_entitlement_from_a_plan_takes_its_terms(
    client: TestClient, acme: dict[str, str]
) -> None:
    made = catalog(client, acme)
    a, dates = made["a"], made["dates"]
    assert (a["feature"], a["quantity"], a["auto_renew"]) == ("seats", "50", True)
    assert (a["starts_at"], a["ends_at"], a["grace_until"]) == (
        shown(dates["alpha_starts"]),
        shown(dates["alpha_ends"]),  # a year later, the same day
        shown(dates["alpha_ends"] + timedelta(days=7)),
    )


def test_features_and_plans_are_listed_per_org(
    client: TestClient, acme: dict[str, str], globex: dict[str, str]
) -> None:
    catalog(client, acme)
    assert [f["key"] for f in client.get("/v1/features", headers=acme).json()] == [
        "api_calls",
        "seats",
    ]
    assert [p["key"] for p in client.get("/v1/plans", headers=acme).json()] == [
        "pro-yearly",
        "trial",
    ]
    assert client.get("/v1/plans", headers=globex).json() == []
    plan_id = client.get("/v1/plans", headers=acme).json()[0]["id"]
    assert client.get(f"/v1/plans/{plan_id}", headers=globex).status_code == 404
    assert client.get("/v1/features/seats", headers=globex).status_code == 404


def test_a_duplicate_feature_key_is_409(client: TestClient, acme: dict[str, str]) -> None:
    response = client.post("/v1/features", json={"key": "api_calls"}, headers=acme)
    assert response.status_code == 409


def test_another_orgs_plan_cannot_be_used(
    client: TestClient, acme: dict[str, str], globex: dict[str, str]
) -> None:
    plan_id = catalog(client, acme)["yearly"]["id"]
    response = client.post(
        "/v1/entitlements", json={"customer_id": "x", "plan_id": plan_id}, headers=globex
    )
    assert response.status_code == 404


def test_the_workspace_page_has_the_seed_envelope_and_row_shape(
    client: TestClient, acme: dict[str, str]
) -> None:
    made = catalog(client, acme)
    body = workspace(client, {"Authorization": "Bearer " + acme["x-api-key"]})
    assert set(body) == {"Data", "Errors", "Warnings", "Success"}
    assert (body["Success"], body["Errors"], body["Warnings"]) == (True, [], [])
    data = body["Data"]
    assert (data["TotalCount"], data["Page"], data["PageSize"]) == (3, 1, 20)
    first = data["Items"][0]
    assert set(first) == {
        "Id", "EntitlementNumber", "EntitlementModelId", "EntitlementModelDisplayName",
        "ModelType", "EntitlementPlanId", "EntitlementPlanDisplayName", "Owner", "Status",
        "EffectiveState", "StartsAtUtc", "EndsAtUtc", "GraceUntilUtc", "IssuedAtUtc",
        "IssuedByUserId", "ResourceCount", "BeneficiaryCount", "PlanFamilies", "RowVersion",
        "Filters",
    }  # fmt: skip
    assert first["Filters"] is None
    assert first["Id"] == made["a"]["id"] and first["EntitlementNumber"] == 1
    assert (first["EntitlementModelDisplayName"], first["ModelType"]) == ("Seats", 1)
    assert first["EntitlementPlanDisplayName"] == "Pro yearly"
    assert first["Owner"] == {
        "EntityDefinitionId": "customer",
        "EntityDisplayName": "Customer",
        "EntityInstanceId": "alpha",
        "DisplayName": "alpha",
    }
    assert (first["Status"], first["EffectiveState"]) == (1, 1)
    assert first["StartsAtUtc"] == shown(made["dates"]["alpha_starts"])
    assert [f["Key"] for f in first["PlanFamilies"]] == ["gold", "legacy"]
    assert uuid.UUID(first["RowVersion"]).version == 5


def test_the_row_version_changes_when_the_row_does(
    client: TestClient, acme: dict[str, str]
) -> None:
    made = catalog(client, acme)
    before = workspace(client, acme, OwnerEntityInstanceId="gamma")["Data"]["Items"][0]
    client.post(f"/v1/entitlements/{made['c']['id']}/suspend", headers=acme)
    after = workspace(client, acme, OwnerEntityInstanceId="gamma")["Data"]["Items"][0]
    assert before["RowVersion"] != after["RowVersion"] and after["Status"] == 4


def test_workspace_filters(client: TestClient, acme: dict[str, str]) -> None:
    made = catalog(client, acme)
    gold = made["yearly"]["families"][0]["id"]
    # Between beta's end (in 12 days) and alpha's (in about two months); gamma has none.
    beta_starts, between_ends = made["dates"]["beta_starts"], made["dates"]["beta_ends"]
    between_ends += timedelta(days=10)
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"PlanId": made["trial"]["id"]}, ["beta"]),
        ({"PlanFamilyIds": gold}, ["alpha"]),
        ({"ConditionFamily": 3}, ["beta"]),
        ({"TermKind": 2}, ["alpha"]),
        ({"TermValue": 14, "TermUnit": 0}, ["beta"]),
        ({"RenewalPolicyId": "auto_renew"}, ["alpha"]),
        ({"RenewalPolicyId": "none"}, ["beta"]),
        ({"OwnerPartyRoleId": "customer"}, ["alpha", "beta", "gamma"]),
        ({"OwnerPartyRoleId": "reseller"}, []),
        ({"OwnerEntityInstanceId": "gamma"}, ["gamma"]),
        ({"Status": 1}, ["alpha", "beta", "gamma"]),
        ({"Status": 3}, []),
        ({"StartsFromUtc": day(beta_starts)}, ["beta", "gamma"]),  # bounds are inclusive
        ({"StartsToUtc": day(beta_starts)}, ["alpha", "beta"]),
        ({"EndsFromUtc": day(between_ends)}, ["alpha"]),
        ({"EndsToUtc": day(between_ends - timedelta(days=1))}, ["beta"]),
        ({"Search": "pro"}, ["alpha"]),
        ({"search": "GAMMA"}, ["gamma"]),  # names and text both case-insensitive
    ]
    for params, expected in cases:
        assert owners(workspace(client, acme, **params)) == expected, params
    models = workspace(client, acme, ModelId=made["c"]["id"])
    assert owners(models) == []


def test_workspace_pages(client: TestClient, acme: dict[str, str]) -> None:
    catalog(client, acme)
    assert owners(workspace(client, acme, Page=2, PageSize=2)) == ["gamma"]
    assert workspace(client, acme, Page=9, PageSize=2)["Data"]["Items"] == []


def test_a_bad_workspace_parameter_is_400_in_the_envelope(
    client: TestClient, acme: dict[str, str]
) -> None:
    for params in ({"Status": 9}, {"ModelId": "x"}, {"Page": 0}, {"PageSize": 500},
                   {"StartsFromUtc": "soon"}, {"Colour": "red"}):  # fmt: skip
        response = client.get(WORKSPACE, params=params, headers=acme)
        assert response.status_code == 400, params
        body = response.json()
        assert body["Success"] is False and body["Data"] is None
        assert body["Errors"][0]["Code"] == "InvalidParameter"


def test_the_access_token_query_parameter_authenticates(
    client: TestClient, acme: dict[str, str]
) -> None:
    catalog(client, acme)
    response = client.get(WORKSPACE, params={"access_token": acme["x-api-key"]})
    assert response.status_code == 200


def test_a_missing_permission_is_403_problem_details(client: TestClient, runtime: Runtime) -> None:
    headers = key_for(runtime, "acme", Permission.EVENTS_WRITE)
    response = client.get(WORKSPACE, headers=headers)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert set(response.json()) >= {"type", "title", "status", "detail"}


def test_another_org_sees_none_of_the_rows(
    client: TestClient, acme: dict[str, str], globex: dict[str, str]
) -> None:
    catalog(client, acme)
    assert workspace(client, globex)["Data"]["TotalCount"] == 0


def test_a_feature_is_renamed_and_retired(client: TestClient, acme: dict[str, str]) -> None:
    body = {"name": "API calls", "is_active": False}
    changed = client.patch("/v1/features/api_calls", json=body, headers=acme).json()
    assert (changed["name"], changed["is_active"]) == ("API calls", False)
    assert client.patch("/v1/features/api_calls", json={}, headers=acme).status_code == 400


def test_a_retired_plan_makes_no_new_entitlements(client: TestClient, acme: dict[str, str]) -> None:
    plan = catalog(client, acme)["trial"]
    path = f"/v1/plans/{plan['id']}"
    stale = client.patch(path, json={"row_version": 9, "is_active": False}, headers=acme)
    assert stale.status_code == 409
    retired = client.patch(path, json={"row_version": 1, "is_active": False}, headers=acme)
    assert (retired.json()["is_active"], retired.json()["row_version"]) == (False, 2)
    response = client.post(
        "/v1/entitlements", json={"customer_id": "z", "plan_id": plan["id"]}, headers=acme
    )
    assert response.status_code == 400 and "retired" in response.json()["detail"]
