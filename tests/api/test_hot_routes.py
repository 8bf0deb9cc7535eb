"""The hot routes (value, reserve, settle) admit the caller in the one worker thread
they take: the value read sends the limiter's take in the round trip of its holds
read, and still limits, fails open, refuses 429 before 403, and answers 503 with
Redis away, as every route does."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from meterd.api.app import create_app
from meterd.api.auth import in_worker
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.storage.rate_limits import RateLimitStore, RateLimitStoreError, Take
from meterd.testing import free_port

from ..helpers import Clock, grant

VALUE = "/v1/customers/cust-1/features/api_calls"
RESERVE = VALUE + "/reserve"


@pytest.fixture(autouse=True)
def granted(runtime: Runtime) -> None:
    now = utcnow()
    grant(
        runtime, quantity="10", starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=30)
    )


@pytest.fixture
def clock(runtime: Runtime) -> Clock:
    clock = Clock()
    runtime.rate_limits.clock = clock
    return clock


def key(runtime: Runtime, *permissions: Permission, **limits: Any) -> dict[str, str]:
    token, _ = runtime.api_keys.create(
        "acme", list(permissions or [Permission.ALL]), utcnow(), **limits
    )
    return {"x-api-key": token}


class SpyStore(RateLimitStore):
    """The bucket store, counting takes sent alone and takes sent with a read."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime.redis, runtime.redis_keys, runtime.rate_limits.clock)
        self.alone = self.pipelined = 0

    def take(self, key_id: str, rate: int, burst: int) -> Take:
        self.alone += 1
        return super().take(key_id, rate, burst)

    def take_pipelined(self, *args: Any) -> tuple[Take, Any]:
        self.pipelined += 1
        return super().take_pipelined(*args)


def test_the_value_read_takes_its_token_in_the_round_trip_of_its_holds_read(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    spy = runtime.rate_limiter.store = SpyStore(runtime)
    headers = key(runtime, rate_limit=5)
    client.get(VALUE, headers=headers)  # the first call loads the scripts into Redis
    spy.alone = spy.pipelined = 0
    assert client.get(VALUE, headers=headers).status_code == 200
    assert (spy.alone, spy.pipelined) == (0, 1)


def test_the_value_read_over_the_burst_is_429_with_retry_after(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = key(runtime, rate_limit=1, rate_burst=3)
    assert [client.get(VALUE, headers=headers).status_code for _ in range(3)] == [200] * 3
    response = client.get(VALUE, headers=headers)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    clock.advance(1)
    assert client.get(VALUE, headers=headers).status_code == 200


def test_reserve_over_the_burst_is_429_and_reserves_nothing(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = key(runtime, rate_limit=1, rate_burst=1)
    body = {"quantity": "1", "idempotency_key": "a"}
    assert client.post(RESERVE, json=body, headers=headers).status_code == 200
    refused = client.post(RESERVE, json={**body, "idempotency_key": "b"}, headers=headers)
    assert refused.status_code == 429
    clock.advance(1)
    value = client.get(VALUE, headers=headers).json()
    assert value["consumed"] == "1"


def test_a_key_without_the_permission_is_limited_before_it_is_refused(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = key(runtime, Permission.EVENTS_WRITE, rate_limit=1, rate_burst=1)
    assert client.get(VALUE, headers=headers).status_code == 403
    assert client.get(VALUE, headers=headers).status_code == 429


def test_a_key_without_the_permission_on_a_customer_never_cached_is_refused(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = key(runtime, Permission.EVENTS_WRITE)
    response = client.get("/v1/customers/nobody/features/api_calls", headers=headers)
    assert response.status_code == 403


def test_the_limiter_failing_in_the_shared_round_trip_lets_the_read_through_counted(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_: Any) -> Any:
        raise RateLimitStoreError("Redis did not answer the rate limit")

    monkeypatch.setattr(runtime.rate_limits, "take_pipelined", down)
    headers = key(runtime, rate_limit=1, rate_burst=1)
    response = client.get(VALUE, headers=headers)
    assert response.status_code == 200
    assert response.json()["quantity"] == "10"
    assert runtime.rate_limiter.unchecked == 1


def test_the_value_read_answers_after_redis_lost_its_scripts(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = key(runtime, rate_limit=1, rate_burst=2)
    assert client.get(VALUE, headers=headers).status_code == 200
    runtime.redis.script_flush()  # as after a restart
    assert client.get(VALUE, headers=headers).json()["quantity"] == "10"
    assert client.get(VALUE, headers=headers).status_code == 429  # and it still took a token


@pytest.fixture
def redis_away(runtime: Runtime) -> Iterator[TestClient]:
    """The API over the test database and a Redis that does not answer."""
    dead = redis.Redis(
        port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), retries=0)
    )
    away = Runtime(settings=runtime.settings, redis=dead, database=runtime.database)
    app = create_app(lambda: away, publish_events=lambda events: None, check_redis=False)
    with TestClient(app) as client:
        yield client
    dead.close()


def test_with_redis_away_the_value_read_is_503(runtime: Runtime, redis_away: TestClient) -> None:
    headers = key(runtime, rate_limit=1, rate_burst=1)
    response = redis_away.get(VALUE, headers=headers)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")


def _hold(client: TestClient, headers: dict[str, str], idempotency_key: str) -> str:
    body = {"quantity": "2", "hold_seconds": 60, "idempotency_key": idempotency_key}
    reserved = client.post(RESERVE, json=body, headers=headers)
    assert reserved.status_code == 200
    hold: str = reserved.json()["hold"]["id"]
    return hold


def test_settle_takes_its_token_in_the_round_trip_of_its_hold_read(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = key(runtime, rate_limit=100)
    hold = _hold(client, headers, "a")
    spy = runtime.rate_limiter.store = SpyStore(runtime)
    settled = client.post(f"/v1/holds/{hold}/settle", json={"quantity": "1"}, headers=headers)
    assert settled.status_code == 200
    assert settled.json()["settled_now"] is True
    assert (spy.alone, spy.pipelined) == (0, 1)


def test_a_settle_over_the_burst_is_429_and_settles_nothing(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = key(runtime, rate_limit=1, rate_burst=1)
    hold = _hold(client, headers, "a")
    refused = client.post(f"/v1/holds/{hold}/settle", json={"quantity": "1"}, headers=headers)
    assert refused.status_code == 429
    clock.advance(1)
    shown = client.get(f"/v1/holds/{hold}", headers=headers).json()
    assert shown["status"] == "held"


def test_a_settle_of_an_unknown_hold_is_limited_then_refused_then_404(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    path = "/v1/holds/00000000-0000-4000-8000-000000000000/settle"
    reader = key(runtime, Permission.ENTITLEMENTS_VIEW, rate_limit=1, rate_burst=1)
    assert client.post(path, json={"quantity": "1"}, headers=reader).status_code == 403
    assert client.post(path, json={"quantity": "1"}, headers=reader).status_code == 429
    assert client.post(path, json={"quantity": "1"}, headers=key(runtime)).status_code == 404


SETTLE_UNKNOWN = "/v1/holds/00000000-0000-4000-8000-000000000000/settle"
#: A malformed request to each hot route: a path, a header, a body that does not validate.
MALFORMED: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
    ("GET", "/v1/customers/cust-1/features/Not%20A%20Key", {}, {}),
    ("POST", RESERVE, {"quantity": "x", "idempotency_key": "a"}, {}),
    ("POST", RESERVE, {"quantity": "1"}, {"Idempotency-Key": "has space"}),
    ("POST", "/v1/holds/not-a-uuid/settle", {"quantity": "1"}, {}),
    ("POST", SETTLE_UNKNOWN, {"quantity": "1", "extra": 1}, {}),
]


@pytest.mark.parametrize(("method", "path", "body", "extra"), MALFORMED)
def test_a_malformed_hot_request_is_400_before_429_or_403_and_takes_no_token(
    client: TestClient,
    runtime: Runtime,
    clock: Clock,
    method: str,
    path: str,
    body: dict[str, Any],
    extra: dict[str, str],
) -> None:
    def send(headers: dict[str, str]) -> int:
        sent = {**headers, **extra}
        if method == "GET":
            return client.get(path, headers=sent).status_code
        return client.post(path, json=body, headers=sent).status_code

    one_token = key(runtime, rate_limit=1, rate_burst=1)
    assert send(one_token) == 400
    assert client.get(VALUE, headers=one_token).status_code == 200  # its token was there
    assert send(one_token) == 400  # the bucket is empty now: still 400, not 429
    assert send(key(runtime, Permission.EVENTS_WRITE)) == 400  # not 403


def test_elsewhere_the_key_is_limited_and_refused_before_the_request_is_validated(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = key(runtime, rate_limit=1, rate_burst=1)
    assert client.get("/v1/entitlements?limit=0", headers=headers).status_code == 400
    assert client.get("/v1/entitlements?limit=0", headers=headers).status_code == 429
    viewer_less = key(runtime, Permission.EVENTS_WRITE)
    assert client.get("/v1/entitlements?limit=0", headers=viewer_less).status_code == 403


def test_the_hot_routes_work_runs_off_the_event_loop_in_the_requests_context() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")

    async def route() -> tuple[int, tuple[int, str]]:
        request_id.set("r-1")  # as a middleware binding a log field would
        return threading.get_ident(), await in_worker(
            lambda: (threading.get_ident(), request_id.get())
        )

    loop_thread, (worker_thread, seen) = asyncio.run(route())
    assert worker_thread != loop_thread
    assert seen == "r-1"
