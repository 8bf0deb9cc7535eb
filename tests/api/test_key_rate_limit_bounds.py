"""A key minted or rotated by a rate-limited key is never less limited than it.

Before, ``POST /v1/api-keys`` bounded the new key's permissions and expiry by the
caller's but not its rate limit: a key limited to 5 requests a second could mint
an unlimited key (``rate_limit: 0``), which could mint more. Now the new key's
rate and burst are at most the caller's (its own limit, or the default from the
settings when it has none), 0 is refused, and left out they follow the caller's;
an unlimited caller sets any. A rotation keeps the old key's limit, so a limited
key may not rotate a key less limited than itself."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.core.timeutil import isoformat, utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

EVENTS = ["EVENTS:WRITE"]


def issue(
    runtime: Runtime,
    *permissions: Permission,
    rate_limit: int | None = None,
    rate_burst: int | None = None,
) -> str:
    token, _ = runtime.api_keys.create(
        "acme",
        list(permissions or [Permission.ALL]),
        utcnow(),
        rate_limit=rate_limit,
        rate_burst=rate_burst,
    )
    return token


def mint(client: TestClient, caller: str, **body: Any) -> Any:
    body.setdefault("permissions", EVENTS)
    return client.post("/v1/api-keys", json=body, headers={"x-api-key": caller})


def rotate(client: TestClient, caller: str, target: str) -> Any:
    body = {"old_valid_until": isoformat(utcnow() + timedelta(minutes=5))}
    target_id = target.split("_")[1]
    return client.post(f"/v1/api-keys/{target_id}/rotate", json=body, headers={"x-api-key": caller})


def test_a_limited_key_cannot_mint_an_unlimited_one(client: TestClient, runtime: Runtime) -> None:
    limited = issue(runtime, rate_limit=5)
    response = mint(client, limited, rate_limit=0)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("rate_limit: 0 (unlimited) is refused")
    assert len(runtime.api_keys.list("acme")) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [({"rate_limit": 6}, "rate_limit: at most 5"), ({"rate_burst": 11}, "rate_burst: at most 10")],
)
def test_a_limited_key_cannot_mint_a_key_with_a_higher_rate_or_burst(
    client: TestClient, runtime: Runtime, body: dict[str, int], field: str
) -> None:
    limited = issue(runtime, rate_limit=5)  # burst 10: twice the rate
    response = mint(client, limited, **body)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(field)
    assert mint(client, limited, rate_limit=5, rate_burst=10).status_code == 201


def test_the_default_limit_bounds_a_key_without_its_own(
    client: TestClient, runtime: Runtime
) -> None:
    """The tests' settings: 1000 a second (burst 2000) for keys without their own."""
    by_default = issue(runtime)
    assert runtime.api_keys.authenticate(by_default).rate_limit is not None  # type: ignore[union-attr]
    for body, field in [
        ({"rate_limit": 0}, "rate_limit: 0"),
        ({"rate_limit": 1001}, "rate_limit: at most 1000"),
        ({"rate_burst": 2001}, "rate_burst: at most 2000"),
    ]:
        response = mint(client, by_default, **body)
        assert response.status_code == 400, response.text
        assert response.json()["detail"].startswith(field)


def test_a_minted_key_left_without_a_limit_takes_the_callers(
    client: TestClient, runtime: Runtime
) -> None:
    limited = issue(runtime, rate_limit=5, rate_burst=7)
    created = mint(client, limited, permissions=["*"])
    assert created.status_code == 201, created.text
    key = created.json()
    assert (key["rate_limit"], key["rate_burst"], key["limit"]) == (5, 7, {"rate": 5, "burst": 7})
    # and that key mints nothing less limited in turn
    assert mint(client, key["key"], rate_limit=0).status_code == 400
    # a key under the default mints one under the default: the same limit
    default = mint(client, issue(runtime)).json()
    assert (default["rate_limit"], default["limit"]) == (None, {"rate": 1000, "burst": 2000})


def test_a_minted_keys_default_burst_is_at_most_the_callers(
    client: TestClient, runtime: Runtime
) -> None:
    limited = issue(runtime, rate_limit=5, rate_burst=6)
    created = mint(client, limited, rate_limit=4)
    assert created.status_code == 201, created.text
    assert created.json()["limit"] == {"rate": 4, "burst": 6}  # not twice the rate, 8
    lower = mint(client, limited, rate_limit=2)
    assert lower.json()["limit"] == {"rate": 2, "burst": 4}


def test_an_unlimited_key_mints_any_limit(client: TestClient, runtime: Runtime) -> None:
    unlimited = issue(runtime, rate_limit=0)
    for limit in (0, 1_000_000):
        response = mint(client, unlimited, rate_limit=limit)
        assert response.status_code == 201, response.text
        assert response.json()["rate_limit"] == limit
    default = mint(client, unlimited).json()  # left out: the default, as before
    assert (default["rate_limit"], default["limit"]) == (None, {"rate": 1000, "burst": 2000})


def test_a_limited_key_cannot_rotate_a_less_limited_key(
    client: TestClient, runtime: Runtime
) -> None:
    manager = issue(runtime, Permission.KEYS_MANAGE, Permission.EVENTS_WRITE, rate_limit=5)
    unlimited = issue(runtime, Permission.EVENTS_WRITE, rate_limit=0)
    refused = rotate(client, manager, unlimited)
    assert refused.status_code == 400, refused.text
    assert refused.json()["detail"].startswith("rate_limit: the new key cannot be less limited")
    burstier = issue(runtime, Permission.EVENTS_WRITE, rate_limit=5, rate_burst=11)
    refused = rotate(client, manager, burstier)
    assert refused.status_code == 400 and refused.json()["detail"].startswith("rate_burst:")
    assert len(runtime.api_keys.list("acme")) == 3
    as_limited = issue(runtime, Permission.EVENTS_WRITE, rate_limit=5)
    taken = rotate(client, manager, as_limited)
    assert taken.status_code == 201, taken.text
    assert taken.json()["limit"] == {"rate": 5, "burst": 10}
    # an unlimited key rotates an unlimited one, as before
    admin = issue(runtime, rate_limit=0)
    assert rotate(client, admin, unlimited).status_code == 201
