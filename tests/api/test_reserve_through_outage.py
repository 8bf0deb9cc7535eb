"""Issue 20, item 5: reserve keeps answering from Redis through a database outage,
also after the process's kept meters have expired (stale beats unavailable: a
meter never changes once created). The worker's ingest goes on counting with its
kept meters too. The database is taken down as in test_database_down.py: the
session factory every store shares is pointed at a closed port.
tests/api/test_reserve_postgres_stopped.py does it with a PostgreSQL really
stopped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.core.domain import Outcome
from meterd.core.errors import UnavailableError
from meterd.core.timeutil import utcnow
from meterd.runtime import STORE_ERRORS, Runtime
from meterd.services.api_keys import CACHE_SECONDS
from meterd.services.meters import MeterCatalog
from meterd.storage.database import make_engine
from meterd.storage.meters import MeterStore
from meterd.testing import event

from ..helpers import assert_log_matches_periods, grant

VALUE = "/v1/customers/cust-1/features/api_calls"
RESERVE = VALUE + "/reserve"
CLOSED_PORT = "postgresql://nobody@127.0.0.1:1/none"


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key_clock(runtime: Runtime) -> Clock:
    clock = Clock()
    runtime.api_keys.clock = clock
    return clock


@pytest.fixture
def meters_clock(runtime: Runtime) -> Clock:
    """The runtime's meter catalog, wired as runtime.py wires it, on a clock moved by
    hand (the services that use it are built again with it)."""
    clock = Clock()
    runtime.__dict__["meters"] = MeterCatalog(
        MeterStore(runtime.database.sessions).meters_of,
        version=runtime.meter_versions.current,
        clock=clock,
    )
    for service in ("ingest", "reserve", "replay", "holds"):
        runtime.__dict__.pop(service, None)
    return clock


@pytest.fixture
def take_database_down(runtime: Runtime) -> Iterator[Any]:
    sessions = runtime.database.sessions
    dead = make_engine(CLOSED_PORT)

    def down() -> None:
        sessions.configure(bind=dead)

    yield down
    sessions.configure(bind=runtime.database.engine)
    dead.dispose()


@pytest.fixture
def served(
    client: TestClient,
    runtime: Runtime,
    acme: dict[str, str],
    key_clock: Clock,
    meters_clock: Clock,
) -> dict[str, str]:
    """cust-1 with 10 api_calls, 3 used (counted by the worker's ingest), one reservation
    of 1 granted through the API (the key verified, the meters kept); then the key
    must be checked again."""
    now = utcnow()
    grant(
        runtime, quantity="10", starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=30)
    )
    assert runtime.ingest.ingest(
        [event(quantity="3", event_id="u1", time=now)], now=now
    ).outcomes == [Outcome.ACCEPTED]
    first = client.post(RESERVE, json={"quantity": "1", "idempotency_key": "k-0"}, headers=acme)
    assert first.json()["outcome"] == "granted", first.text
    key_clock.now += CACHE_SECONDS + 1
    return acme


def test_reserve_answers_from_redis_after_the_kept_meters_expire_with_the_database_down(
    client: TestClient, served: dict[str, str], meters_clock: Clock, take_database_down: Any
) -> None:
    take_database_down()
    meters_clock.now += 3600  # far past the catalog's ttl of 10 s
    granted = client.post(RESERVE, json={"quantity": "5", "idempotency_key": "k-1"}, headers=served)
    assert granted.status_code == 200, granted.text
    assert (granted.json()["outcome"], granted.json()["value"]["remaining"]) == ("granted", "1")
    denied = client.post(RESERVE, json={"quantity": "2", "idempotency_key": "k-2"}, headers=served)
    assert (denied.status_code, denied.json()["outcome"]) == (200, "denied")
    again = client.post(RESERVE, json={"quantity": "5", "idempotency_key": "k-1"}, headers=served)
    assert (again.status_code, again.json()["outcome"]) == (200, "already_granted")
    value = client.get(VALUE, headers=served)
    assert value.status_code == 200, value.text
    assert (value.json()["consumed"], value.json()["remaining"]) == ("9", "1")


def test_reserve_on_a_feature_this_process_never_read_is_503_with_the_database_down(
    client: TestClient,
    runtime: Runtime,
    served: dict[str, str],
    meters_clock: Clock,
    take_database_down: Any,
) -> None:
    """What docs/api.md says: the kept list cannot vouch for a feature it lacks."""
    take_database_down()
    response = client.post(
        "/v1/customers/cust-1/features/seats/reserve",
        json={"quantity": "1", "idempotency_key": "k-1"},
        headers=served,
    )
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert "the meters of org 'acme' could not be read" in response.json()["detail"]


def test_ingest_counts_with_the_kept_meters_after_they_expire_with_the_database_down(
    runtime: Runtime, served: dict[str, str], meters_clock: Clock, take_database_down: Any
) -> None:
    runtime.ingest.ingest([event(quantity="1", event_id="warm", time=utcnow())], now=utcnow())
    take_database_down()
    meters_clock.now += 3600
    now = utcnow()
    report = runtime.ingest.ingest([event(quantity="2", event_id="u2", time=now)], now=now)
    assert report.outcomes == [Outcome.ACCEPTED]
    (balance,) = runtime.balance.current("acme", "cust-1", "api_calls", now)
    assert balance.consumed == 3 + 1 + 1 + 2  # ingested, reserved, warm, u2


def test_ingest_waits_for_the_database_when_a_meter_may_have_been_created_since(
    runtime: Runtime, served: dict[str, str], meters_clock: Clock, take_database_down: Any
) -> None:
    """The org's meters version moved: the kept list may lack a meter of a type it
    reads, and counting without it would lose that meter's items. The batch is
    refused whole (nothing counted) and retried once the database answers."""
    runtime.ingest.ingest([event(quantity="1", event_id="warm", time=utcnow())], now=utcnow())
    take_database_down()
    runtime.meter_versions.bump("acme")
    now = utcnow()
    with pytest.raises(UnavailableError):
        runtime.ingest.ingest([event(quantity="2", event_id="u2", time=now)], now=now)
    (balance,) = runtime.balance.current("acme", "cust-1", "api_calls", now)
    assert balance.consumed == 3 + 1 + 1


def test_holds_are_made_settled_and_released_with_the_database_down(
    client: TestClient,
    runtime: Runtime,
    served: dict[str, str],
    meters_clock: Clock,
    take_database_down: Any,
) -> None:
    take_database_down()
    meters_clock.now += 3600
    body = {"quantity": "4", "idempotency_key": "h-1", "hold_seconds": 60}
    held = client.post(RESERVE, json=body, headers=served)
    assert held.status_code == 200, held.text
    hold = held.json()["hold"]
    assert held.json()["value"]["remaining"] == "2"
    second = client.post(
        RESERVE, json={**body, "quantity": "2", "idempotency_key": "h-2"}, headers=served
    )
    settle = client.post(f"/v1/holds/{hold['id']}/settle", json={"quantity": "3"}, headers=served)
    assert settle.status_code == 200, settle.text
    release = client.post(f"/v1/holds/{second.json()['hold']['id']}/release", headers=served)
    assert release.status_code == 200, release.text
    value = client.get(VALUE, headers=served).json()
    assert (value["consumed"], value["held"], value["remaining"]) == ("7", "0", "3")


def test_a_hold_settled_with_the_database_down_is_flushed_once_it_is_back(
    client: TestClient,
    runtime: Runtime,
    served: dict[str, str],
    meters_clock: Clock,
    take_database_down: Any,
) -> None:
    body = {"quantity": "4", "idempotency_key": "h-1", "hold_seconds": 60}
    hold = client.post(RESERVE, json=body, headers=served).json()["hold"]
    take_database_down()
    url = f"/v1/holds/{hold['id']}/settle"
    assert client.post(url, json={"quantity": "3"}, headers=served).status_code == 200
    with pytest.raises(STORE_ERRORS):
        runtime.flush.flush_all(utcnow())
    runtime.database.sessions.configure(bind=runtime.database.engine)
    runtime.flush.flush_all(utcnow())
    assert_log_matches_periods(runtime)
    (balance,) = runtime.balance.balances("acme", "cust-1", "api_calls", utcnow())
    assert (balance.consumed, balance.pending) == (7, 0)
