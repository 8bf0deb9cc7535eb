"""Issue 24, item 2: customer portal tokens (``POST /v1/portal-tokens``) and the
portal's read-only JSON (``/portal/api/*``).

A token reads one customer of one org, expires, cannot be forged or re-aimed
(another audience, another org's key), and is never API access. The signing key
lives in the database: replicas minting the first token at once end with one key.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from meterd.core.errors import NotFoundError
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.services.portal_tokens import (
    AUDIENCE,
    ISSUER,
    LEEWAY_SECONDS,
    PortalTokenExpired,
    PortalTokenInvalid,
    PortalTokens,
)
from meterd.storage.portal_keys import PortalKeyStore
from meterd.testing import event

from ..helpers import grant
from .conftest import key_for

MINT = "/v1/portal-tokens"
OVERVIEW = "/portal/api/overview"
USAGE = "/portal/api/usage"


def mint(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    response = client.post(MINT, json={"customer_id": "cust-1", **body}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def crafted(runtime: Runtime, **claims: Any) -> str:
    """A token signed with the store's current key, with these claims over valid ones."""
    key = PortalKeyStore(runtime.database.sessions).current(utcnow())
    now = int(utcnow().timestamp())
    base = {"iss": ISSUER, "aud": AUDIENCE, "org": "acme", "sub": "cust-1", "iat": now,
            "exp": now + 600, "jti": "j"}  # fmt: skip
    return jwt.encode({**base, **claims}, key.secret, algorithm="HS256", headers={"kid": key.kid})


def used_now(runtime: Runtime, customer: str, quantity: str, event_id: str) -> None:
    now = utcnow()
    runtime.ingest.ingest(
        [event(customer, quantity, event_id=event_id, time=now - timedelta(minutes=1))], now=now
    )
    runtime.flush.flush_all(now)


@pytest.fixture
def granted(runtime: Runtime) -> None:
    now = utcnow()
    for customer, quantity in (("cust-1", "100"), ("cust-2", "777")):
        grant(
            runtime,
            customer,
            quantity,
            starts_at=now - timedelta(days=2),
            ends_at=now + timedelta(days=20),
            now=now,
        )
    used_now(runtime, "cust-1", "12.5", "a")
    used_now(runtime, "cust-2", "40.25", "b")


# -- minting ------------------------------------------------------------------------------


def test_mint_answers_a_token_a_portal_url_with_it_in_the_fragment_and_its_expiry(
    client: TestClient, acme: dict[str, str]
) -> None:
    before = utcnow()
    minted = mint(client, acme, expires_in=600)
    assert minted["url"] == f"http://testserver/portal#token={minted['token']}"
    expires_at = datetime.fromisoformat(minted["expires_at"].replace("Z", "+00:00"))
    assert before + timedelta(seconds=598) <= expires_at <= utcnow() + timedelta(seconds=600)


def test_mint_defaults_to_an_hour(client: TestClient, acme: dict[str, str]) -> None:
    minted = mint(client, acme)
    claims = jwt.decode(minted["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600


def test_the_token_carries_the_claims_and_the_key_id(
    client: TestClient, acme: dict[str, str]
) -> None:
    token = mint(client, acme)["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert {k: claims[k] for k in ("iss", "aud", "org", "sub")} == {
        "iss": "meterd",
        "aud": "meterd-portal",
        "org": "acme",
        "sub": "cust-1",
    }
    assert claims["jti"] and isinstance(claims["iat"], int)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256" and header["kid"].startswith("pk_")


@pytest.mark.parametrize("expires_in", [59, 30 * 24 * 3600 + 1, 0, -5, "600", 60.5])
def test_expires_in_outside_60_seconds_to_30_days_is_a_400(
    client: TestClient, acme: dict[str, str], expires_in: Any
) -> None:
    response = client.post(
        MINT, json={"customer_id": "cust-1", "expires_in": expires_in}, headers=acme
    )
    assert response.status_code == 400, response.text
    assert "expires_in" in response.json()["detail"]


@pytest.mark.parametrize("expires_in", [60, 30 * 24 * 3600])
def test_expires_in_bounds_are_inclusive(
    client: TestClient, acme: dict[str, str], expires_in: int
) -> None:
    mint(client, acme, expires_in=expires_in)


def test_mint_needs_the_entitlements_view_permission(client: TestClient, runtime: Runtime) -> None:
    writer = key_for(runtime, "acme", Permission.EVENTS_WRITE)
    response = client.post(MINT, json={"customer_id": "cust-1"}, headers=writer)
    assert response.status_code == 403
    viewer = key_for(runtime, "acme", Permission.ENTITLEMENTS_VIEW)
    mint(client, viewer)


def test_mint_refuses_an_unknown_field(client: TestClient, acme: dict[str, str]) -> None:
    response = client.post(MINT, json={"customer_id": "c", "org": "globex"}, headers=acme)
    assert response.status_code == 400
    assert "org" in response.json()["detail"]


def test_the_url_follows_the_public_url_setting(
    client: TestClient, acme: dict[str, str], runtime: Runtime
) -> None:
    runtime.settings.public_url = "https://meter.example.com/billing/"
    minted = mint(client, acme)
    assert minted["url"] == f"https://meter.example.com/billing/portal#token={minted['token']}"


def test_the_url_follows_the_root_path_behind_a_proxy(
    runtime: Runtime, acme: dict[str, str]
) -> None:
    from meterd.api.app import create_app

    app = create_app(lambda: runtime, publish_events=lambda _e: None, check_redis=False)
    proxied = TestClient(app, root_path="/meterd")
    minted = proxied.post(MINT, json={"customer_id": "cust-1"}, headers=acme).json()
    assert minted["url"] == f"http://testserver/meterd/portal#token={minted['token']}"


# -- reading ------------------------------------------------------------------------------


def test_the_overview_shows_the_tokens_customer_with_exact_live_balances(
    client: TestClient, acme: dict[str, str], granted: None
) -> None:
    token = mint(client, acme)["token"]
    response = client.get(OVERVIEW, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["customer_id"] == "cust-1"
    (feature,) = body["features"]
    value = client.get("/v1/customers/cust-1/features/api_calls", headers=acme).json()
    for name in ("quantity", "consumed", "remaining", "held", "overage", "has_access", "state"):
        assert feature[name] == value[name], name
    assert (feature["feature"], feature["consumed"], feature["remaining"]) == (
        "api_calls",
        "12.5",
        "87.5",
    )
    (ent,) = feature["entitlements"]
    assert ent["quantity"] == "100" and ent["period_end"] and ent["rolled_over"] is None


def test_the_overview_never_shows_another_customer(
    client: TestClient, acme: dict[str, str], granted: None
) -> None:
    token = mint(client, acme)["token"]
    text = client.get(OVERVIEW, headers=bearer(token)).text
    assert "cust-2" not in text and "777" not in text and "40.25" not in text


def test_portal_usage_is_the_customers_usage_grouped_by_entitlement(
    client: TestClient, acme: dict[str, str], granted: None
) -> None:
    token = mint(client, acme)["token"]
    now = utcnow()
    window = {
        "from": (now - timedelta(days=3)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
    }
    response = client.get(USAGE, params=window, headers=bearer(token))
    assert response.status_code == 200, response.text
    rows = response.json()["data"]
    assert {r["customer_id"] for r in rows} == {"cust-1"}
    assert all(r["feature"] == "api_calls" and r["entitlement_id"] for r in rows)
    assert [r["quantity"] for r in rows] == ["12.5"]
    by_feature = client.get(
        USAGE, params={**window, "group_by": "feature"}, headers=bearer(token)
    ).json()["data"]
    assert [(r["feature"], r["quantity"]) for r in by_feature] == [("api_calls", "12.5")]
    assert "entitlement_id" not in by_feature[0]


def test_portal_usage_takes_no_customer_from_the_query(
    client: TestClient, acme: dict[str, str], granted: None
) -> None:
    token = mint(client, acme)["token"]
    now = utcnow()
    params = {
        "from": (now - timedelta(days=3)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
        "customer_id": "cust-2",
        "group_by": "entitlement",
    }
    text = client.get(USAGE, params=params, headers=bearer(token)).text
    assert "40.25" not in text and "cust-2" not in text


def test_portal_usage_keeps_the_bounds_of_v1_usage(
    client: TestClient, acme: dict[str, str]
) -> None:
    token = mint(client, acme)["token"]
    backwards = {"from": "2026-11-22T00:00:00Z", "to": "2026-11-20T00:00:00Z"}
    response = client.get(USAGE, params=backwards, headers=bearer(token))
    assert response.status_code == 400
    bad_zone = {"from": "2026-11-20T00:00:00Z", "to": "2026-11-22T00:00:00Z", "tz": "Mars/Base"}
    assert client.get(USAGE, params=bad_zone, headers=bearer(token)).status_code == 400
    grouped = {"from": "2026-11-20T00:00:00Z", "to": "2026-11-22T00:00:00Z", "group_by": "customer"}
    assert client.get(USAGE, params=grouped, headers=bearer(token)).status_code == 400


# -- refusals -----------------------------------------------------------------------------


def problem_of(response: Any) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


def test_no_token_is_a_401(client: TestClient) -> None:
    assert problem_of(client.get(OVERVIEW))["title"] == "Portal link not valid"


def test_an_expired_token_is_a_401_titled_expired(
    client: TestClient, runtime: Runtime, granted: None
) -> None:
    past = int(utcnow().timestamp()) - LEEWAY_SECONDS - 1
    token = crafted(runtime, iat=past - 600, exp=past)
    body = problem_of(client.get(OVERVIEW, headers=bearer(token)))
    assert body["title"] == "Portal link expired"
    assert "expired" in body["detail"]
    assert "12.5" not in str(body)


def test_a_token_within_the_leeway_of_its_expiry_still_reads(
    client: TestClient, runtime: Runtime
) -> None:
    now = int(utcnow().timestamp())
    token = crafted(runtime, iat=now - 600, exp=now - 1)
    assert client.get(OVERVIEW, headers=bearer(token)).status_code == 200


def test_a_forged_signature_is_a_401_titled_not_valid(
    client: TestClient, acme: dict[str, str], runtime: Runtime
) -> None:
    token = mint(client, acme)["token"]
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    forged_signature = f"{header}.{payload}.{flipped}"
    key = PortalKeyStore(runtime.database.sessions).current(utcnow())
    claims = jwt.decode(token, options={"verify_signature": False})
    other_secret = jwt.encode(
        {**claims, "sub": "cust-2"}, b"x" * 32, algorithm="HS256", headers={"kid": key.kid}
    )
    for forged in (forged_signature, other_secret, "not-a-token", token + "x"):
        body = problem_of(client.get(OVERVIEW, headers=bearer(forged)))
        assert body["title"] == "Portal link not valid", forged


def test_an_expired_and_forged_token_is_not_valid_rather_than_expired(
    client: TestClient, runtime: Runtime
) -> None:
    key = PortalKeyStore(runtime.database.sessions).current(utcnow())
    now = int(utcnow().timestamp())
    forged = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "org": "acme", "sub": "cust-1", "iat": now - 900,
         "exp": now - 600, "jti": "j"},
        b"y" * 32, algorithm="HS256", headers={"kid": key.kid},
    )  # fmt: skip
    assert problem_of(client.get(OVERVIEW, headers=bearer(forged)))["title"] == (
        "Portal link not valid"
    )


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "somebody-else"},
        {"iss": "not-meterd"},
        {"org": "no-such-org"},
        {"iat": int(utcnow().timestamp()) + 3600, "exp": int(utcnow().timestamp()) + 7200},
    ],
    ids=["wrong-aud", "wrong-iss", "unknown-org", "issued-in-the-future"],
)
def test_a_token_with_a_wrong_claim_is_not_valid(
    client: TestClient, runtime: Runtime, claims: dict[str, Any]
) -> None:
    token = crafted(runtime, **claims)
    assert problem_of(client.get(OVERVIEW, headers=bearer(token)))["title"] == (
        "Portal link not valid"
    )


@pytest.mark.parametrize("missing", ["exp", "sub", "org", "jti", "aud"])
def test_a_token_missing_a_claim_is_not_valid(
    client: TestClient, runtime: Runtime, missing: str
) -> None:
    key = PortalKeyStore(runtime.database.sessions).current(utcnow())
    now = int(utcnow().timestamp())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "org": "acme", "sub": "cust-1", "iat": now,
              "exp": now + 600, "jti": "j"}  # fmt: skip
    del claims[missing]
    token = jwt.encode(claims, key.secret, algorithm="HS256", headers={"kid": key.kid})
    assert problem_of(client.get(OVERVIEW, headers=bearer(token)))["title"] == (
        "Portal link not valid"
    )


def test_an_unknown_key_id_or_another_algorithm_is_not_valid(
    client: TestClient, runtime: Runtime
) -> None:
    key = PortalKeyStore(runtime.database.sessions).current(utcnow())
    now = int(utcnow().timestamp())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "org": "acme", "sub": "cust-1", "iat": now,
              "exp": now + 600, "jti": "j"}  # fmt: skip
    unknown = jwt.encode(claims, key.secret, algorithm="HS256", headers={"kid": "pk_" + "0" * 16})
    other_alg = jwt.encode(claims, key.secret, algorithm="HS512", headers={"kid": key.kid})
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": key.kid})
    for token in (unknown, other_alg, unsigned):
        assert problem_of(client.get(OVERVIEW, headers=bearer(token)))["title"] == (
            "Portal link not valid"
        ), token


def test_another_orgs_token_reads_only_that_orgs_customer(
    client: TestClient, acme: dict[str, str], globex: dict[str, str], granted: None
) -> None:
    """globex minting for "cust-1" gets globex's cust-1 (none here), never acme's."""
    token = mint(client, globex)["token"]
    body = client.get(OVERVIEW, headers=bearer(token)).json()
    assert body == {"customer_id": "cust-1", "expires_at": body["expires_at"], "features": []}
    now = utcnow()
    window = {"from": (now - timedelta(days=3)).isoformat(), "to": now.isoformat()}
    assert client.get(USAGE, params=window, headers=bearer(token)).json()["data"] == []


def test_a_token_is_not_an_api_key(client: TestClient, acme: dict[str, str], granted: None) -> None:
    token = mint(client, acme)["token"]
    for headers in ({"x-api-key": token}, bearer(token)):
        for path in ("/v1/entitlements", "/v1/customers/cust-1/features/api_calls"):
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (headers, path)
            assert "portal token is not an API key" in response.json()["detail"]
        response = client.post(MINT, json={"customer_id": "cust-2"}, headers=headers)
        assert response.status_code == 401
    workspace = "/api/workspace/entitlement-operations/entitlements"
    assert client.get(workspace, params={"access_token": token}).status_code == 401


def test_an_api_key_is_not_a_portal_token(client: TestClient, acme: dict[str, str]) -> None:
    for headers in (bearer(acme["x-api-key"]), acme):
        assert problem_of(client.get(OVERVIEW, headers=headers))["title"] == (
            "Portal link not valid"
        )


# -- the service and the key store ----------------------------------------------------------


def test_verify_reads_the_org_and_customer_of_a_minted_token(runtime: Runtime) -> None:
    now = utcnow()
    minted = runtime.portal_tokens.mint("acme", "cust-9", now, 120)
    access = runtime.portal_tokens.verify(minted.token, now)
    assert (access.org, access.customer_id, access.expires_at) == (
        "acme",
        "cust-9",
        minted.expires_at,
    )
    with pytest.raises(PortalTokenExpired):
        runtime.portal_tokens.verify(minted.token, now + timedelta(seconds=121 + LEEWAY_SECONDS))


def test_mint_for_an_unknown_org_is_not_found(runtime: Runtime) -> None:
    with pytest.raises(NotFoundError):
        runtime.portal_tokens.mint("nobody", "cust-1", utcnow())


def test_a_token_minted_by_one_replica_verifies_on_another(runtime: Runtime) -> None:
    """Two services over the same database (two API processes): no shared memory."""
    other = PortalTokens(PortalKeyStore(runtime.database.sessions), runtime.organisations.exists)
    now = utcnow()
    minted = other.mint("acme", "cust-1", now)
    assert runtime.portal_tokens.verify(minted.token, now).customer_id == "cust-1"


def test_a_deleted_key_stops_verifying_once_the_cache_forgets_it(runtime: Runtime) -> None:
    ticks = [0.0]
    tokens = PortalTokens(
        PortalKeyStore(runtime.database.sessions),
        runtime.organisations.exists,
        clock=lambda: ticks[0],
    )
    now = utcnow()
    minted = tokens.mint("acme", "cust-1", now)
    from sqlalchemy import delete

    from meterd.storage.models import PortalSigningKey

    with runtime.database.sessions.begin() as s:
        s.execute(delete(PortalSigningKey))
    assert tokens.verify(minted.token, now).customer_id == "cust-1"  # cached
    ticks[0] = 301.0
    with pytest.raises(PortalTokenInvalid):
        tokens.verify(minted.token, now)


def test_a_retired_key_signs_no_new_token_but_its_tokens_still_verify(runtime: Runtime) -> None:
    store = PortalKeyStore(runtime.database.sessions)
    now = utcnow()
    first = store.current(now)
    token = runtime.portal_tokens.mint("acme", "cust-1", now).token
    assert store.retire_current(now) == first.kid
    second = store.current(now)
    assert second.kid != first.kid and store.count() == 2
    assert runtime.portal_tokens.verify(token, now).customer_id == "cust-1"


def test_replicas_creating_the_first_key_at_once_end_with_one_key(runtime: Runtime) -> None:
    """Eight "replicas" (own stores, own caches) mint the first token together."""
    replicas = [
        PortalTokens(PortalKeyStore(runtime.database.sessions), runtime.organisations.exists)
        for _ in range(8)
    ]
    start = threading.Barrier(len(replicas))
    kids: list[str] = []
    errors: list[BaseException] = []

    def mint_one(tokens: PortalTokens) -> None:
        try:
            start.wait()
            token = tokens.mint("acme", "cust-1", datetime.now(UTC)).token
            kids.append(jwt.get_unverified_header(token)["kid"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=mint_one, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(kids) == len(replicas) and len(set(kids)) == 1
    assert PortalKeyStore(runtime.database.sessions).count() == 1


def test_the_overview_shows_what_a_renewed_term_carried_as_periods_do(
    client: TestClient, acme: dict[str, str]
) -> None:
    now = utcnow()
    body = {
        "customer_id": "cust-1", "feature": "api_calls", "quantity": "10",
        "starts_at": (now - timedelta(hours=36)).isoformat(), "auto_renew": True,
        "term_value": 1, "term_unit": "DAY", "rollover_max": "4",
    }  # fmt: skip
    response = client.post("/v1/entitlements", json=body, headers=acme)
    assert response.status_code == 201, response.text
    periods = client.get(f"/v1/entitlements/{response.json()['id']}/periods", headers=acme).json()
    token = mint(client, acme)["token"]
    (feature,) = client.get(OVERVIEW, headers=bearer(token)).json()["features"]
    (ent,) = feature["entitlements"]
    assert (ent["quantity"], ent["rolled_over"]) == ("14", "4")
    assert (periods[-1]["quantity"], periods[-1]["rolled_over"]) == ("14", "4")
