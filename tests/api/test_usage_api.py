"""Native usage routes: real-time value, reserve (raced), event intake; auth on each."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from meterd.core.domain import BillingType, Outcome
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.testing import event

from ..helpers import grant
from .conftest import Published, key_for

VALUE = "/v1/customers/cust-1/features/api_calls"


def grant_now(rt: Runtime, quantity: str | None = "10", **extra: Any) -> Any:
    now = utcnow()
    start, end = now - timedelta(days=1), now + timedelta(days=30)
    return grant(rt, quantity=quantity, starts_at=start, ends_at=end, **extra)


def use(rt: Runtime, quantity: str, event_id: str = "e1") -> None:
    now = utcnow()
    report = rt.ingest.ingest([event(quantity=quantity, event_id=event_id, time=now)], now=now)
    assert report.outcomes == [Outcome.ACCEPTED]


# -- health ---------------------------------------------------------------------------------


def test_healthz_answers_without_a_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_checks_the_database_and_redis(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


# -- authentication ---------------------------------------------------------------------------


def test_a_route_without_a_key_is_401_as_problem_details(client: TestClient) -> None:
    response = client.get(VALUE)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["title"] == "Unauthorized"


def test_a_made_up_key_is_401(client: TestClient) -> None:
    fake = "mk_0123456789abcdef_" + "A" * 32
    assert client.get(VALUE, headers={"x-api-key": fake}).status_code == 401


def test_a_bearer_token_is_accepted(client: TestClient, runtime: Runtime) -> None:
    token = key_for(runtime, "acme", Permission.ENTITLEMENTS_VIEW)["x-api-key"]
    response = client.get(VALUE, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_a_key_without_the_permission_is_403(client: TestClient, runtime: Runtime) -> None:
    headers = key_for(runtime, "acme", Permission.EVENTS_WRITE)
    response = client.get(VALUE, headers=headers)
    assert response.status_code == 403
    assert "ENTITLEMENTS:VIEW" in response.json()["detail"]


def test_a_revoked_key_stops_working(client: TestClient, runtime: Runtime) -> None:
    token, row = runtime.api_keys.create("acme", [Permission.ALL], utcnow())
    runtime.api_keys.revoke(row.id, utcnow())
    runtime.api_keys._cache.clear()  # as after CACHE_SECONDS
    assert client.get(VALUE, headers={"x-api-key": token}).status_code == 401


# -- the real-time value ------------------------------------------------------------------------


def test_the_value_adds_pending_usage_to_flushed_usage(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant_now(runtime, "10")
    use(runtime, "2.5", "a")
    runtime.flush.flush_all(utcnow())
    use(runtime, "1", "b")
    body = client.get(VALUE, headers=acme).json()
    assert (body["quantity"], body["consumed"], body["remaining"], body["overage"]) == (
        "10",
        "3.5",
        "6.5",
        "0",
    )
    assert body["has_access"] is True and body["state"] == "ACTIVE"


def test_an_exhausted_grant_has_no_access(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant_now(runtime, "2")
    use(runtime, "3")
    body = client.get(VALUE, headers=acme).json()
    assert (body["has_access"], body["state"], body["overage"]) == (False, "EXHAUSTED", "1")


def test_an_unlimited_grant_has_no_quantity(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant_now(runtime, None)
    body = client.get(VALUE, headers=acme).json()
    assert (body["quantity"], body["remaining"], body["has_access"]) == (None, None, True)


def test_a_customer_without_entitlements_has_no_access(
    client: TestClient, acme: dict[str, str]
) -> None:
    body = client.get(VALUE, headers=acme).json()
    assert (body["has_access"], body["state"], body["entitlements"]) == (
        False,
        "NO_ENTITLEMENT",
        [],
    )


def test_another_orgs_key_does_not_see_the_customer(
    client: TestClient, runtime: Runtime, globex: dict[str, str]
) -> None:
    grant_now(runtime, "10")
    use(runtime, "4")
    body = client.get(VALUE, headers=globex).json()
    assert body["entitlements"] == [] and body["consumed"] == "0"


def test_a_bad_feature_key_is_400(client: TestClient, acme: dict[str, str]) -> None:
    response = client.get("/v1/customers/cust-1/features/no%20spaces", headers=acme)
    assert response.status_code == 400
    assert "feature" in response.json()["detail"]


# -- reserve ------------------------------------------------------------------------------------


def reserve(client: TestClient, headers: dict[str, str], quantity: str, key: str) -> dict[str, Any]:
    response = client.post(
        VALUE + "/reserve", json={"quantity": quantity, "idempotency_key": key}, headers=headers
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_reserve_grants_within_the_quantity_and_consumes_it(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant_now(runtime, "10")
    result = reserve(client, acme, "4", "r1")
    assert (result["granted"], result["outcome"], result["value"]["consumed"]) == (
        True,
        "granted",
        "4",
    )


def test_reserve_denies_what_does_not_fit_and_consumes_nothing(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant_now(runtime, "10")
    use(runtime, "8")
    result = reserve(client, acme, "3", "r1")
    assert (result["granted"], result["outcome"], result["value"]["consumed"]) == (
        False,
        "denied",
        "8",
    )


def test_a_retried_reservation_consumes_once(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant_now(runtime, "10")
    reserve(client, acme, "4", "same")
    again = reserve(client, acme, "4", "same")
    assert (again["granted"], again["outcome"], again["value"]["consumed"]) == (
        True,
        "already_granted",
        "4",
    )


def test_reserve_takes_room_across_entitlements_without_overage(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant_now(runtime, "3", priority=0)
    grant_now(runtime, "3", priority=1)
    assert reserve(client, acme, "5", "r1")["granted"] is True
    assert reserve(client, acme, "2", "r2")["granted"] is False
    result = reserve(client, acme, "1", "r3")
    assert [e["consumed"] for e in result["value"]["entitlements"]] == ["3", "3"]


def test_reserve_on_pay_per_use_is_not_capped(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant_now(runtime, "10", billing_type=BillingType.PAY_PER_USE)
    assert reserve(client, acme, "25", "r1")["granted"] is True


def test_reserve_without_an_idempotency_key_is_400(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant_now(runtime, "10")
    response = client.post(VALUE + "/reserve", json={"quantity": "1"}, headers=acme)
    assert response.status_code == 400


def test_the_idempotency_key_header_works_too(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant_now(runtime, "10")
    headers = {**acme, "Idempotency-Key": "h1"}
    first = client.post(VALUE + "/reserve", json={"quantity": "1"}, headers=headers).json()
    second = client.post(VALUE + "/reserve", json={"quantity": "1"}, headers=headers).json()
    assert (first["outcome"], second["outcome"]) == ("granted", "already_granted")


def test_fifty_callers_racing_for_the_last_units_never_exceed_the_quantity(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant_now(runtime, "100")
    use(runtime, "93")  # 7 units left
    barrier = threading.Barrier(50)

    def call(i: int) -> bool:
        barrier.wait()
        return bool(reserve(client, acme, "1", f"race-{i}")["granted"])

    with ThreadPoolExecutor(50) as pool:
        granted = list(pool.map(call, range(50)))
    assert sum(granted) == 7
    body = client.get(VALUE, headers=acme).json()
    assert (body["consumed"], body["overage"], body["state"]) == ("100", "0", "EXHAUSTED")


def test_reserve_needs_its_own_permission(client: TestClient, runtime: Runtime) -> None:
    grant_now(runtime, "10")
    headers = key_for(runtime, "acme", Permission.ENTITLEMENTS_VIEW)
    response = client.post(
        VALUE + "/reserve", json={"quantity": "1", "idempotency_key": "k"}, headers=headers
    )
    assert response.status_code == 403


def test_another_org_cannot_reserve_on_the_customer(
    client: TestClient, runtime: Runtime, globex: dict[str, str]
) -> None:
    grant_now(runtime, "10")
    result = reserve(client, globex, "1", "x")
    assert (result["granted"], result["outcome"]) == (False, "no_entitlement")


# -- events over HTTP ---------------------------------------------------------------------------


def test_a_batch_of_events_is_queued_under_the_keys_org(
    client: TestClient, runtime: Runtime, acme: dict[str, str], published: Published
) -> None:
    grant_now(runtime, "10")
    events = [event(event_id=f"h{i}", time=utcnow()) for i in range(3)]
    for e in events:
        del e["org"]
    response = client.post(
        "/v1/events",
        content=json.dumps(events),
        headers={**acme, "content-type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 202
    assert response.json()["queued"] == 3
    assert {e["org"] for e in published.events} == {"acme"}
    report = runtime.ingest.ingest(published.events, now=utcnow())
    assert report.outcomes == [Outcome.ACCEPTED] * 3


def test_a_single_event_is_accepted(
    client: TestClient, acme: dict[str, str], published: Published
) -> None:
    response = client.post("/v1/events", json=event(event_id="one"), headers=acme)
    assert response.status_code == 202
    assert response.json()["results"] == [
        {"index": 0, "id": "one", "status": "queued", "reason": None}
    ]


def test_invalid_events_are_reported_and_dead_lettered_while_the_rest_is_queued(
    client: TestClient, runtime: Runtime, acme: dict[str, str], published: Published
) -> None:
    bad = event(event_id="bad", quantity="-1")
    response = client.post("/v1/events", json=[event(event_id="ok"), bad], headers=acme)
    body = response.json()
    assert (body["queued"], body["invalid"]) == (1, 1)
    assert body["results"][1]["status"] == "invalid" and "quantity" in body["results"][1]["reason"]
    assert [e["id"] for e in published.events] == ["ok"]
    assert runtime.dead_letters.count_by_reason() == {"invalid": 1}


def test_an_event_naming_another_org_is_refused(
    client: TestClient, acme: dict[str, str], published: Published
) -> None:
    response = client.post("/v1/events", json=event(org="globex"), headers=acme)
    assert response.json()["results"][0]["status"] == "invalid"
    assert published.events == []


def test_a_body_that_is_not_json_is_400(client: TestClient, acme: dict[str, str]) -> None:
    response = client.post("/v1/events", content=b"{nope", headers=acme)
    assert response.status_code == 400


def test_metrics_need_the_metrics_permission_and_parse(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    viewer = key_for(runtime, "acme", Permission.ENTITLEMENTS_VIEW)
    assert client.get("/metrics", headers=viewer).status_code == 403
    ops = key_for(runtime, "acme", Permission.METRICS_VIEW)
    response = client.get("/metrics", headers=ops)
    assert response.status_code == 200
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {"meterd_events", "meterd_flush_lag_seconds", "meterd_ingest_batch_size"} <= names
