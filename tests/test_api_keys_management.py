"""Managing API keys: a list that never shows a secret, last use without a write per
request, expiry (401 saying so), rotation (the old key works until a date), over the
API and the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from meterd import runtime as runtime_module
from meterd.cli import app as cli_app
from meterd.core.timeutil import isoformat, utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import TOUCH_SECONDS, ApiKeyError, Permission

from .api.conftest import NoBroker, Published
from .conftest import NOW

FEATURES = "/v1/features"


class Clocks:
    """The key service's monotonic clock (cache, last-use writes) and wall clock
    (expiry, last-use times), moved together by hand."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.now = utcnow()

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clocks(runtime: Runtime) -> Clocks:
    clocks = Clocks()
    runtime.api_keys.clock = lambda: clocks.mono
    runtime.api_keys.wall = lambda: clocks.now
    return clocks


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    from meterd.api.app import create_app

    runtime.catalog.create_org("globex", "Globex", NOW)
    app = create_app(lambda: runtime, publish_events=Published().append, celery_app=NoBroker)
    with TestClient(app) as test_client:
        yield test_client


def issue(runtime: Runtime, *permissions: Permission, org: str = "acme", **kw: Any) -> str:
    token, _ = runtime.api_keys.create(org, list(permissions or [Permission.ALL]), utcnow(), **kw)
    return token


def key_id(token: str) -> str:
    return token.split("_")[1]


def h(token: str) -> dict[str, str]:
    return {"x-api-key": token}


# -- the list -------------------------------------------------------------------------


def test_the_list_shows_every_key_of_the_org_and_never_a_secret(
    client: TestClient, runtime: Runtime
) -> None:
    admin = issue(runtime, Permission.KEYS_VIEW, name="admin")
    other = issue(runtime, Permission.EVENTS_WRITE, name="ingest", rate_limit=5)
    issue(runtime, org="globex")
    response = client.get("/v1/api-keys", headers=h(admin))
    assert response.status_code == 200, response.text
    keys = {k["id"]: k for k in response.json()}
    assert set(keys) == {key_id(admin), key_id(other)}
    row = keys[key_id(other)]
    assert row["name"] == "ingest"
    assert row["prefix"] == f"mk_{key_id(other)}_"
    assert row["permissions"] == ["EVENTS:WRITE"]
    assert row["status"] == "active"
    assert (row["rate_limit"], row["rate_burst"], row["limit"]) == (
        5,
        None,
        {"rate": 5, "burst": 10},
    )
    assert row["last_used_at"] is None and row["expires_at"] is None
    stored = runtime.api_keys.store.get(key_id(other))
    for token in (admin, other):
        assert token.split("_", 2)[2] not in response.text
    assert stored.secret_hash not in response.text
    assert "secret" not in response.text


def test_listing_keys_needs_the_keys_view_permission(client: TestClient, runtime: Runtime) -> None:
    response = client.get("/v1/api-keys", headers=h(issue(runtime, Permission.ENTITLEMENTS_VIEW)))
    assert response.status_code == 403
    assert "KEYS:VIEW" in response.json()["detail"]


def test_the_list_shows_the_default_limit_and_unlimited_keys(runtime: Runtime) -> None:
    runtime.api_keys.default_rate, runtime.api_keys.default_burst = 100, None
    default, unlimited = issue(runtime), issue(runtime, rate_limit=0)
    keys = {k.id: k for k in runtime.api_keys.list("acme")}
    assert keys[key_id(default)].limit is not None
    assert (keys[key_id(default)].limit.rate, keys[key_id(default)].limit.burst) == (100, 200)
    assert keys[key_id(unlimited)].limit is None


# -- last use -------------------------------------------------------------------------


def last_used(runtime: Runtime, token: str) -> datetime | None:
    return runtime.api_keys.get(key_id(token)).last_used_at


def test_last_use_is_recorded_at_most_once_a_minute_per_key(
    client: TestClient, runtime: Runtime, clocks: Clocks
) -> None:
    token = issue(runtime)
    assert last_used(runtime, token) is None
    first = clocks.now
    assert client.get(FEATURES, headers=h(token)).status_code == 200
    assert last_used(runtime, token) == first
    clocks.advance(TOUCH_SECONDS - 1)
    for _ in range(5):
        client.get(FEATURES, headers=h(token))
    assert last_used(runtime, token) == first  # no write per request
    clocks.advance(1)
    client.get(FEATURES, headers=h(token))
    assert last_used(runtime, token) == clocks.now


def test_last_use_never_moves_backwards(runtime: Runtime) -> None:
    token = issue(runtime)
    later = utcnow() + timedelta(hours=1)
    runtime.api_keys.store.touch(key_id(token), later)
    runtime.api_keys.store.touch(key_id(token), later - timedelta(minutes=5))
    assert last_used(runtime, token) == later


# -- expiry ---------------------------------------------------------------------------


def test_a_key_past_its_expiry_is_401_saying_it_expired(
    client: TestClient, runtime: Runtime, clocks: Clocks
) -> None:
    expires = clocks.now + timedelta(hours=1)
    token = issue(runtime, expires_at=expires)
    assert client.get(FEATURES, headers=h(token)).status_code == 200
    clocks.advance(3599)
    assert client.get(FEATURES, headers=h(token)).status_code == 200
    clocks.advance(1)  # within the cache's time: the cached key expires on time too
    response = client.get(FEATURES, headers=h(token))
    assert response.status_code == 401
    assert response.json()["detail"] == (
        f"the API key {key_id(token)} expired at {expires.isoformat()}"
    )
    assert runtime.api_keys.get(key_id(token)).status == "expired"


def test_a_key_cannot_be_issued_already_expired(runtime: Runtime) -> None:
    with pytest.raises(ApiKeyError):
        issue(runtime, expires_at=utcnow() - timedelta(seconds=1))


# -- rotation -------------------------------------------------------------------------


def test_rotation_keeps_the_old_key_until_the_date_then_only_the_new_one_works(
    client: TestClient, runtime: Runtime, clocks: Clocks
) -> None:
    old = issue(runtime, Permission.ENTITLEMENTS_VIEW, name="gateway", rate_limit=7, rate_burst=9)
    until = clocks.now + timedelta(days=1)
    new, row = runtime.api_keys.rotate(key_id(old), until, clocks.now)
    assert (row.org_id, row.name, row.permissions) == ("acme", "gateway", "ENTITLEMENTS:VIEW")
    assert (row.rate_limit, row.rate_burst, row.rotated_from) == (7, 9, key_id(old))
    assert client.get(FEATURES, headers=h(old)).status_code == 200
    assert client.get(FEATURES, headers=h(new)).status_code == 200
    clocks.advance(24 * 3600)
    assert client.get(FEATURES, headers=h(old)).status_code == 401
    assert client.get(FEATURES, headers=h(new)).status_code == 200


def test_rotation_never_lengthens_an_earlier_expiry(runtime: Runtime) -> None:
    soon = utcnow() + timedelta(hours=1)
    old = issue(runtime, expires_at=soon)
    runtime.api_keys.rotate(key_id(old), soon + timedelta(days=30), utcnow())
    assert runtime.api_keys.get(key_id(old)).expires_at == soon


def rotate(client: TestClient, caller: str, target: str, **body: Any) -> Any:
    body.setdefault("old_valid_until", isoformat(utcnow() + timedelta(days=7)))
    return client.post(f"/v1/api-keys/{key_id(target)}/rotate", json=body, headers=h(caller))


def test_rotation_over_the_api_returns_the_new_key_once(
    client: TestClient, runtime: Runtime
) -> None:
    admin = issue(runtime, Permission.KEYS_MANAGE, Permission.KEYS_VIEW, Permission.EVENTS_WRITE)
    target = issue(runtime, Permission.EVENTS_WRITE, name="ingest")
    until = (utcnow() + timedelta(days=7)).replace(microsecond=0)
    response = rotate(client, admin, target, old_valid_until=until.isoformat())
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["key"].startswith(body["prefix"]) and body["rotated_from"] == key_id(target)
    assert (body["name"], body["permissions"]) == ("ingest", ["EVENTS:WRITE"])
    assert client.post("/v1/events", json=[], headers=h(body["key"])).status_code != 401
    listed = {k["id"]: k for k in client.get("/v1/api-keys", headers=h(admin)).json()}
    assert listed[key_id(target)]["expires_at"] == isoformat(until)
    assert body["key"] not in str(listed)


def test_a_key_manager_cannot_rotate_a_key_broader_than_itself(
    client: TestClient, runtime: Runtime
) -> None:
    manager = issue(runtime, Permission.KEYS_MANAGE)
    response = rotate(client, manager, issue(runtime, Permission.ALL))
    assert response.status_code == 403
    assert len(runtime.api_keys.list("acme")) == 2  # no key was made


def test_rotation_refuses_a_date_in_the_past_and_a_revoked_key(
    client: TestClient, runtime: Runtime
) -> None:
    admin, target = issue(runtime), issue(runtime)
    past = rotate(client, admin, target, old_valid_until="2020-01-01T00:00:00Z")
    assert past.status_code == 400 and "revoke" in past.json()["detail"]
    naive = rotate(client, admin, target, old_valid_until="2099-01-01T00:00:00")
    assert naive.status_code == 400 and "timezone" in naive.json()["detail"]
    runtime.api_keys.revoke(key_id(target), utcnow())
    assert rotate(client, admin, target).status_code == 409


def test_rotating_another_orgs_key_is_not_found(client: TestClient, runtime: Runtime) -> None:
    response = rotate(client, issue(runtime, org="globex"), issue(runtime))
    assert response.status_code == 404


# -- the command line -----------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def cli(cli_env: None) -> Any:
    def invoke(*args: str) -> str:
        result = runner.invoke(cli_app, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    return invoke


def test_cli_lists_keys_without_their_secrets(cli: Any) -> None:
    token = (
        cli(
            "keys",
            "create",
            "--org",
            "acme",
            "--permission",
            "*",
            "--name",
            "ops",
            "--rate-limit",
            "3",
        )
        .strip()
        .splitlines()[-1]
    )
    out = cli("keys", "list", "--org", "acme")  # a table, wrapped to the terminal
    assert "ops" in out and "active" in out and token.split("_", 2)[2] not in out
    (listed,) = json.loads(cli("keys", "list", "--org", "acme", "--json"))
    assert (listed["id"], listed["name"], listed["limit"]) == (
        key_id(token),
        "ops",
        {"rate": 3, "burst": 6},
    )
    assert "secret" not in str(listed) and token.split("_", 2)[2] not in str(listed)


def test_cli_rotates_a_key(cli: Any) -> None:
    old = (
        cli("keys", "create", "--org", "acme", "--permission", "EVENTS:WRITE")
        .strip()
        .splitlines()[-1]
    )
    until = isoformat(utcnow() + timedelta(days=2))
    out = cli("keys", "rotate", "--org", "acme", key_id(old), "--old-valid-until", until)
    new = out.strip().splitlines()[-1]
    keys = runtime_module.get_runtime().api_keys
    principal = keys.authenticate(new)
    assert principal is not None and principal.permissions == {"EVENTS:WRITE"}
    assert keys.get(key_id(old)).expires_at is not None


def test_cli_sets_a_keys_limit(cli: Any) -> None:
    token = cli("keys", "create", "--org", "acme", "--permission", "*").strip().splitlines()[-1]
    assert "unlimited" in cli("keys", "limit", "--org", "acme", key_id(token), "--rate-limit", "0")
    assert "4/s burst 5" in cli(
        "keys", "limit", "--org", "acme", key_id(token), "--rate-limit", "4", "--burst", "5"
    )
