"""``POST|GET|DELETE /v1/alert-rules``: the org's alert rules over HTTP."""

from __future__ import annotations

from fastapi.testclient import TestClient

from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

from ..helpers import detail_of, grant
from .conftest import key_for


def test_a_rule_is_created_listed_read_and_deleted(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    ent = grant(runtime)
    made = client.post(
        "/v1/alert-rules",
        json={"kind": "PERCENT", "threshold": 150, "entitlement_id": str(ent.id)},
        headers=acme,
    )
    assert made.status_code == 201, made.text
    rule = made.json()
    assert rule["id"].startswith("ar_")
    assert (rule["kind"], rule["threshold"], rule["scope"]) == ("PERCENT", "150", "entitlement")
    assert rule["entitlement_id"] == str(ent.id)
    assert client.get("/v1/alert-rules", headers=acme).json() == [rule]
    assert client.get(f"/v1/alert-rules/{rule['id']}", headers=acme).json() == rule
    gone = client.delete(f"/v1/alert-rules/{rule['id']}", headers=acme)
    assert gone.status_code == 204
    assert client.get("/v1/alert-rules", headers=acme).json() == []
    assert client.get(f"/v1/alert-rules/{rule['id']}", headers=acme).status_code == 404
    assert client.delete(f"/v1/alert-rules/{rule['id']}", headers=acme).status_code == 404


def test_another_orgs_rule_is_not_found(
    client: TestClient, acme: dict[str, str], globex: dict[str, str]
) -> None:
    rule = client.post(
        "/v1/alert-rules", json={"kind": "CONSUMED", "threshold": "5"}, headers=acme
    ).json()
    assert client.get(f"/v1/alert-rules/{rule['id']}", headers=globex).status_code == 404
    assert client.delete(f"/v1/alert-rules/{rule['id']}", headers=globex).status_code == 404
    assert client.get("/v1/alert-rules", headers=globex).json() == []


def test_managing_rules_takes_entitlements_manage(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    viewer = key_for(runtime, "acme", Permission.ENTITLEMENTS_VIEW)
    body = {"kind": "REMAINING", "threshold": "10"}
    assert client.post("/v1/alert-rules", json=body, headers=viewer).status_code == 403
    assert client.get("/v1/alert-rules", headers=viewer).status_code == 200


def test_bad_rules_are_400s(client: TestClient, acme: dict[str, str]) -> None:
    for body in (
        {"kind": "PERCENT", "threshold": "0"},
        {"kind": "PERCENT", "threshold": "12.34567"},
        {"kind": "PERCENT", "threshold": "10001"},
        {"kind": "CONSUMED", "threshold": "1e3"},
        {"kind": "OTHER", "threshold": "1"},
        {"kind": "CONSUMED", "threshold": "1", "feature": "api_calls", "customer_id": "c"},
    ):
        detail_of(client.post("/v1/alert-rules", json=body, headers=acme))
    missing = client.post(
        "/v1/alert-rules", json={"kind": "CONSUMED", "threshold": "1", "feature": "x"}, headers=acme
    )
    assert missing.status_code == 404
