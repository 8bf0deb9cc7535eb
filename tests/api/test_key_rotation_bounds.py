"""Issue 20 (6): a rotated key never outlives nor outranks the key it replaces, nor
the key that rotates it. A key expiring in an hour could rotate itself into a key
that never expires, with the same permissions; now it gets at most its own expiry
and permissions, and asking for more is a 400 naming the bound."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from meterd import runtime as runtime_module
from meterd.cli import app as cli_app
from meterd.core.timeutil import isoformat, utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import NEVER, ApiKeyError, Permission

HOUR = timedelta(hours=1)


def issue(runtime: Runtime, *permissions: Permission, expires_at: datetime | None = None) -> str:
    token, _ = runtime.api_keys.create(
        "acme", list(permissions or [Permission.ALL]), utcnow(), expires_at=expires_at
    )
    return token


def key_id(token: str) -> str:
    return token.split("_")[1]


def rotate(client: TestClient, caller: str, target: str, **body: Any) -> Any:
    body.setdefault("old_valid_until", isoformat(utcnow() + timedelta(minutes=5)))
    return client.post(
        f"/v1/api-keys/{key_id(target)}/rotate", json=body, headers={"x-api-key": caller}
    )


def keys_of(runtime: Runtime) -> int:
    return len(runtime.api_keys.list("acme"))


@pytest.fixture
def expiring(runtime: Runtime) -> tuple[str, datetime]:
    """A key with every permission that expires in an hour, and its expiry."""
    expires_at = (utcnow() + HOUR).replace(microsecond=0)
    return issue(runtime, expires_at=expires_at), expires_at


def test_a_key_expiring_soon_cannot_rotate_itself_into_one_that_never_expires(
    client: TestClient, runtime: Runtime, expiring: tuple[str, datetime]
) -> None:
    token, expires_at = expiring
    response = rotate(client, token, token, expires_at=None)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert f"cannot outlive the API key {key_id(token)} it replaces" in detail
    assert expires_at.isoformat() in detail and "never to expire" in detail
    assert keys_of(runtime) == 1
    lasting = issue(runtime)  # a key that never expires may be replaced by one that never does
    taken = rotate(client, lasting, lasting, expires_at=None)
    assert taken.status_code == 201 and taken.json()["expires_at"] is None


@pytest.mark.parametrize("before", [timedelta(minutes=30), timedelta(0)])
def test_a_rotated_key_expires_at_the_latest_with_the_key_it_replaces(
    client: TestClient, runtime: Runtime, expiring: tuple[str, datetime], before: timedelta
) -> None:
    token, expires_at = expiring
    later = isoformat(expires_at + timedelta(seconds=1))
    response = rotate(client, token, token, expires_at=later)
    assert response.status_code == 400, response.text
    assert f"cannot outlive the API key {key_id(token)}" in response.json()["detail"]
    assert keys_of(runtime) == 1
    taken = rotate(client, token, token, expires_at=isoformat(expires_at - before))
    assert taken.status_code == 201, taken.text
    assert taken.json()["expires_at"] == isoformat(expires_at - before)


def test_a_rotated_key_takes_the_old_keys_expiry_by_default(
    client: TestClient, expiring: tuple[str, datetime]
) -> None:
    token, expires_at = expiring
    response = rotate(client, token, token)
    assert response.status_code == 201, response.text
    assert response.json()["expires_at"] == isoformat(expires_at)


def test_a_key_rotated_once_bounds_the_next_rotation_by_its_new_end(
    client: TestClient, runtime: Runtime, expiring: tuple[str, datetime]
) -> None:
    token, _ = expiring
    old_valid_until = (utcnow() + timedelta(minutes=5)).replace(microsecond=0)
    first = rotate(client, token, token, old_valid_until=isoformat(old_valid_until))
    assert first.status_code == 201, first.text
    again = rotate(client, token, token, expires_at=isoformat(old_valid_until + HOUR / 2))
    assert again.status_code == 400 and old_valid_until.isoformat() in again.json()["detail"]
    assert rotate(client, token, token).json()["expires_at"] == isoformat(old_valid_until)


def test_a_rotated_key_cannot_outlive_the_key_that_rotates_it(
    client: TestClient, runtime: Runtime
) -> None:
    lasting = issue(runtime, Permission.EVENTS_WRITE)
    expires_at = (utcnow() + HOUR).replace(microsecond=0)
    manager = issue(runtime, Permission.KEYS_MANAGE, Permission.EVENTS_WRITE, expires_at=expires_at)
    refused = rotate(client, manager, lasting, expires_at=None)
    assert refused.status_code == 400, refused.text
    assert f"the API key {key_id(manager)} that rotates it" in refused.json()["detail"]
    taken = rotate(client, manager, lasting)
    assert taken.status_code == 201, taken.text
    assert taken.json()["expires_at"] == isoformat(expires_at)


def test_a_rotated_key_cannot_hold_a_permission_the_old_key_lacks(
    client: TestClient, runtime: Runtime
) -> None:
    admin = issue(runtime)
    target = issue(runtime, Permission.EVENTS_WRITE)
    asked = ["EVENTS:WRITE", "ENTITLEMENTS:MANAGE"]
    response = rotate(client, admin, target, permissions=asked)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert f"cannot outrank the API key {key_id(target)}" in detail
    assert "ENTITLEMENTS:MANAGE" in detail and keys_of(runtime) == 2
    everything = rotate(client, admin, target, permissions=["*"])
    assert everything.status_code == 400 and "does not hold *" in everything.json()["detail"]


def test_a_rotated_key_may_hold_fewer_permissions(client: TestClient, runtime: Runtime) -> None:
    admin = issue(runtime)
    target = issue(runtime, Permission.EVENTS_WRITE, Permission.ENTITLEMENTS_VIEW)
    response = rotate(client, admin, target, permissions=["EVENTS:WRITE"])
    assert response.status_code == 201, response.text
    assert response.json()["permissions"] == ["EVENTS:WRITE"]
    new = response.json()["key"]
    assert client.get("/v1/features", headers={"x-api-key": new}).status_code == 403


def test_the_service_refuses_more_than_the_old_key_for_every_caller(
    runtime: Runtime, expiring: tuple[str, datetime]
) -> None:
    token, expires_at = expiring
    keys = runtime.api_keys
    until = utcnow() + timedelta(minutes=5)
    with pytest.raises(ApiKeyError, match="cannot outlive"):
        keys.rotate(key_id(token), until, utcnow(), expires_at=NEVER)
    with pytest.raises(ApiKeyError, match="cannot outlive"):
        keys.rotate(key_id(token), until, utcnow(), expires_at=expires_at + HOUR)
    narrow = issue(runtime, Permission.EVENTS_WRITE)
    with pytest.raises(ApiKeyError, match="cannot outrank"):
        keys.rotate(key_id(narrow), until, utcnow(), permissions=[Permission.KEYS_MANAGE])
    _, row = keys.rotate(key_id(token), until, utcnow())
    assert row.expires_at == expires_at


def test_the_command_line_rotation_keeps_the_old_keys_expiry(cli_env: None) -> None:
    runner = CliRunner()
    assert runner.invoke(cli_app, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(cli_app, ["org", "create", "acme"]).exit_code == 0
    expires_at = (utcnow() + HOUR).replace(microsecond=0)
    keys = runtime_module.get_runtime().api_keys
    token, _ = keys.create("acme", [Permission.EVENTS_WRITE], utcnow(), expires_at=expires_at)
    until = isoformat(utcnow() + timedelta(minutes=5))
    later = isoformat(expires_at + HOUR)
    args = ["keys", "rotate", "--org", "acme", key_id(token), "--old-valid-until", until]
    refused = runner.invoke(cli_app, [*args, "--expires-at", later])
    assert isinstance(refused.exception, ApiKeyError), refused.output
    assert "cannot outlive" in str(refused.exception)
    rotated = runner.invoke(cli_app, args, catch_exceptions=False)
    new = rotated.output.strip().splitlines()[-1]
    principal = keys.authenticate(new)
    assert principal is not None and principal.expires_at == expires_at


def test_a_rotation_whose_bound_moved_meanwhile_is_a_conflict(
    runtime: Runtime, expiring: tuple[str, datetime]
) -> None:
    from meterd.core.errors import ConflictError
    from meterd.storage.models import ApiKey

    token, expires_at = expiring
    # A rotation read the old key expiring in an hour; another one ended it sooner.
    runtime.api_keys.rotate(key_id(token), utcnow() + timedelta(minutes=5), utcnow())
    late = ApiKey(
        id="0123456789abcdef",
        org_id="acme",
        name="",
        secret_hash="0" * 64,
        permissions="*",
        created_at=utcnow(),
        expires_at=expires_at,
        rotated_from=key_id(token),
    )
    with pytest.raises(ConflictError, match="changed meanwhile"):
        runtime.api_keys.store.rotate(key_id(token), late, utcnow() + HOUR, utcnow())
    assert keys_of(runtime) == 2
