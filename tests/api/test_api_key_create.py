"""POST /v1/api-keys: a key manager issues a key of its org, the secret shown once,
never broader nor longer-lived than its own key."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from meterd.core.timeutil import isoformat, utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

from .conftest import key_for


def test_a_new_key_is_returned_once_and_authenticates(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    response = client.post(
        "/v1/api-keys",
        json={"permissions": ["EVENTS:WRITE"], "name": "producer", "rate_limit": 5},
        headers=acme,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["key"].startswith(f"mk_{created['id']}_")
    assert (created["name"], created["permissions"]) == ("producer", ["EVENTS:WRITE"])
    assert created["limit"] == {"rate": 5, "burst": 10}
    principal = runtime.api_keys.authenticate(created["key"])
    assert principal is not None and principal.org == "acme"
    listed = client.get("/v1/api-keys", headers=acme).json()
    assert created["id"] in [k["id"] for k in listed]
    assert created["key"] not in str(listed)


def test_a_key_manager_cannot_mint_a_broader_key(client: TestClient, runtime: Runtime) -> None:
    manager = key_for(runtime, "acme", Permission.KEYS_MANAGE, Permission.EVENTS_WRITE)
    broader = {"permissions": ["ENTITLEMENTS:MANAGE"]}
    assert client.post("/v1/api-keys", json=broader, headers=manager).status_code == 403
    narrower = {"permissions": ["EVENTS:WRITE"]}
    assert client.post("/v1/api-keys", json=narrower, headers=manager).status_code == 201


def test_a_new_key_outlives_not_the_callers(client: TestClient, runtime: Runtime) -> None:
    soon = utcnow() + timedelta(days=1)
    token, _ = runtime.api_keys.create("acme", [Permission.ALL], utcnow(), expires_at=soon)
    caller = {"x-api-key": token}
    later = {"permissions": ["EVENTS:WRITE"], "expires_at": isoformat(soon + timedelta(days=1))}
    assert client.post("/v1/api-keys", json=later, headers=caller).status_code == 400
    unset = client.post("/v1/api-keys", json={"permissions": ["EVENTS:WRITE"]}, headers=caller)
    assert unset.status_code == 201 and unset.json()["expires_at"] is not None


def test_creating_a_key_needs_keys_manage(client: TestClient, runtime: Runtime) -> None:
    viewer = key_for(runtime, "acme", Permission.KEYS_VIEW, Permission.EVENTS_WRITE)
    body = {"permissions": ["EVENTS:WRITE"]}
    assert client.post("/v1/api-keys", json=body, headers=viewer).status_code == 403
