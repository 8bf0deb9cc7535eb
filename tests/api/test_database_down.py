"""Issue 11: with the database down, the value and reserve routes keep answering from
Redis for customers already cached, authenticating keys verified in the last few
minutes from memory; everything else answers 503 problem details with
Retry-After, and a key that cannot be checked is 503, not 401.

The database is taken down by pointing the one session factory every store shares
at a closed port: each store's next session fails to connect, as in an outage.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import CACHE_SECONDS, REMEMBER_SECONDS
from meterd.storage.database import make_engine
from meterd.testing import event

from ..helpers import grant
from .conftest import key_for

VALUE = "/v1/customers/cust-1/features/api_calls"
RESERVE = VALUE + "/reserve"
CLOSED_PORT = "postgresql://nobody@127.0.0.1:1/none"


class Clock:
    """The API key service's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(runtime: Runtime) -> Clock:
    clock = Clock()
    runtime.api_keys.clock = clock
    return clock


@pytest.fixture
def take_database_down(runtime: Runtime) -> Iterator[Any]:
    """Call it to take the database down (until the end of the test)."""
    sessions = runtime.database.sessions
    dead = make_engine(CLOSED_PORT)

    def down() -> None:
        sessions.configure(bind=dead)

    yield down
    sessions.configure(bind=runtime.database.engine)
    dead.dispose()


def assert_unavailable(response: Any) -> str:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"].startswith("application/problem+json")
    detail: str = response.json()["detail"]
    return detail


@pytest.fixture
def served(
    client: TestClient, runtime: Runtime, acme: dict[str, str], clock: Clock
) -> dict[str, Any]:
    """cust-1 with 10 api_calls, 3 used, read once through the API (so cached in Redis
    and the key verified), then CACHE_SECONDS later: the key must be checked again."""
    now = utcnow()
    grant(
        runtime, quantity="10", starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=30)
    )
    runtime.ingest.ingest([event(quantity="3", event_id="u1", time=now)], now=now)
    before = client.get(VALUE, headers=acme)
    assert before.status_code == 200, before.text
    clock.now += CACHE_SECONDS + 1
    return dict(before.json())


def test_the_value_of_a_cached_customer_answers_from_redis_with_the_database_down(
    client: TestClient, acme: dict[str, str], served: dict[str, Any], take_database_down: Any
) -> None:
    take_database_down()
    response = client.get(VALUE, headers=acme)
    assert response.status_code == 200, response.text
    assert response.json() == served
    assert (served["consumed"], served["remaining"]) == ("3", "7")


def test_reserve_for_a_cached_customer_answers_from_redis_with_the_database_down(
    client: TestClient, acme: dict[str, str], served: dict[str, Any], take_database_down: Any
) -> None:
    take_database_down()
    body = {"quantity": "5", "idempotency_key": "k-1"}
    granted = client.post(RESERVE, json=body, headers=acme)
    assert granted.status_code == 200, granted.text
    assert (granted.json()["outcome"], granted.json()["value"]["remaining"]) == ("granted", "2")
    refused = client.post(RESERVE, json={"quantity": "5", "idempotency_key": "k-2"}, headers=acme)
    assert (refused.status_code, refused.json()["outcome"]) == (200, "denied")


def test_a_key_never_seen_is_503_not_401_with_the_database_down(
    client: TestClient, runtime: Runtime, served: dict[str, Any], take_database_down: Any
) -> None:
    unseen = key_for(runtime, "acme")
    take_database_down()
    detail = assert_unavailable(client.get(VALUE, headers=unseen))
    assert detail == "the API key cannot be checked now: the database did not answer; try again"


def test_a_key_last_verified_over_five_minutes_ago_is_503_with_the_database_down(
    client: TestClient,
    acme: dict[str, str],
    served: dict[str, Any],
    clock: Clock,
    take_database_down: Any,
) -> None:
    take_database_down()
    clock.now += REMEMBER_SECONDS - CACHE_SECONDS - 2
    assert client.get(VALUE, headers=acme).status_code == 200
    clock.now += 2
    assert_unavailable(client.get(VALUE, headers=acme))


def test_a_malformed_key_is_still_401_with_the_database_down(
    client: TestClient, served: dict[str, Any], take_database_down: Any
) -> None:
    take_database_down()
    response = client.get(VALUE, headers={"x-api-key": "not-a-key"})
    assert response.status_code == 401, response.text


def test_a_key_found_revoked_is_not_remembered_when_the_database_goes_down(
    client: TestClient,
    runtime: Runtime,
    acme: dict[str, str],
    served: dict[str, Any],
    take_database_down: Any,
) -> None:
    key_id = acme["x-api-key"].split("_")[1]
    assert runtime.api_keys.revoke(key_id, utcnow())
    assert client.get(VALUE, headers=acme).status_code == 401
    take_database_down()
    assert_unavailable(client.get(VALUE, headers=acme))


def test_the_value_of_a_customer_not_cached_is_503_with_the_database_down(
    client: TestClient, acme: dict[str, str], served: dict[str, Any], take_database_down: Any
) -> None:
    take_database_down()
    response = client.get("/v1/customers/cust-never-read/features/api_calls", headers=acme)
    assert assert_unavailable(response).startswith("a store did not answer")


def test_the_entitlement_list_is_503_with_the_database_down(
    client: TestClient, acme: dict[str, str], served: dict[str, Any], take_database_down: Any
) -> None:
    take_database_down()
    detail = assert_unavailable(client.get("/v1/entitlements", headers=acme))
    assert detail == "a store did not answer (OperationalError); try again"


def test_valid_events_are_still_queued_with_the_database_down(
    client: TestClient,
    acme: dict[str, str],
    served: dict[str, Any],
    take_database_down: Any,
    published: Any,
) -> None:
    take_database_down()
    response = client.post("/v1/events", json=[event(event_id="e-1", org="acme")], headers=acme)
    assert response.status_code == 202, response.text
    assert [e["id"] for e in published.events] == ["e-1"]


def test_an_invalid_event_is_503_with_the_database_down_as_its_dead_letter_cannot_be_written(
    client: TestClient, acme: dict[str, str], served: dict[str, Any], take_database_down: Any
) -> None:
    take_database_down()
    invalid = {**event(event_id="e-2", org="acme"), "specversion": "0.3"}
    assert_unavailable(client.post("/v1/events", json=[invalid], headers=acme))


def test_every_other_route_is_503_with_the_database_down(
    client: TestClient, acme: dict[str, str], served: dict[str, Any], take_database_down: Any
) -> None:
    take_database_down()
    headers = {**acme, "organisation": "acme"}
    for path in (
        "/v1/features",
        "/v1/plans",
        "/entitlements/customer/unique/cust-1",
        "/api/workspace/entitlement-operations/entitlements",
        "/api/web/v4/tenants/cust-1/entitlements/USERS",
    ):
        assert_unavailable(client.get(path, headers=headers))


def test_a_key_revoked_by_this_process_is_forgotten_at_once(
    client: TestClient, runtime: Runtime, acme: dict[str, str], clock: Clock
) -> None:
    assert client.get(VALUE, headers=acme).status_code == 200  # verified and remembered
    assert runtime.api_keys.revoke(acme["x-api-key"].split("_")[1], utcnow())
    assert client.get(VALUE, headers=acme).status_code == 401  # within CACHE_SECONDS
    assert runtime.api_keys.remembered(acme["x-api-key"]) is None
