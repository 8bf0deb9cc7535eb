"""A token bucket per API key on every authenticated route: 429 with Retry-After
over the limit, tokens back with time, limits per key, and requests go through
(counted, logged) when Redis does not answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from meterd.runtime import Runtime
from meterd.services.api_keys import OPEN_SECONDS, Permission
from meterd.storage.rate_limits import RateLimitStore
from meterd.testing import free_port

from ..conftest import NOW
from ..helpers import Clock

FEATURES = "/v1/features"


@pytest.fixture
def clock(runtime: Runtime) -> Clock:
    clock = Clock()
    runtime.rate_limits.clock = clock
    return clock


def key(runtime: Runtime, *permissions: Permission, **limits: Any) -> dict[str, str]:
    token, _ = runtime.api_keys.create("acme", list(permissions or [Permission.ALL]), NOW, **limits)
    return {"x-api-key": token}


def statuses(client: TestClient, headers: dict[str, str], n: int) -> list[int]:
    return [client.get(FEATURES, headers=headers).status_code for _ in range(n)]


def test_a_key_over_its_burst_is_429_with_retry_after_and_a_clear_problem(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = key(runtime, rate_limit=1, rate_burst=3)
    assert statuses(client, headers, 3) == [200, 200, 200]
    response = client.get(FEATURES, headers=headers)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["title"] == "Too Many Requests"
    assert "rate limit of 1 requests a second (burst 3)" in body["detail"]


def test_retry_after_is_at_least_one_second_even_when_the_token_is_near(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = key(runtime, rate_limit=1, rate_burst=1)
    client.get(FEATURES, headers=headers)
    clock.advance(0.7)
    response = client.get(FEATURES, headers=headers)
    assert (response.status_code, response.headers["retry-after"]) == (429, "1")


def test_tokens_come_back_over_time(client: TestClient, runtime: Runtime, clock: Clock) -> None:
    headers = key(runtime, rate_limit=2, rate_burst=2)
    assert statuses(client, headers, 3) == [200, 200, 429]
    clock.advance(0.5)
    assert statuses(client, headers, 2) == [200, 429]
    clock.advance(60)
    assert statuses(client, headers, 3) == [200, 200, 429]


def test_keys_without_their_own_limit_get_the_default(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    runtime.api_keys.default_rate, runtime.api_keys.default_burst = 1, 2
    assert statuses(client, key(runtime), 3) == [200, 200, 429]


def test_the_default_burst_is_twice_the_rate(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    runtime.api_keys.default_rate, runtime.api_keys.default_burst = 2, None
    assert statuses(client, key(runtime), 5) == [200, 200, 200, 200, 429]


def test_a_keys_own_limit_overrides_the_default(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    runtime.api_keys.default_rate, runtime.api_keys.default_burst = 1, 1
    assert statuses(client, key(runtime, rate_limit=1, rate_burst=4), 5) == [200] * 4 + [429]
    assert statuses(client, key(runtime, rate_limit=0), 20) == [200] * 20  # 0: unlimited


def test_a_default_of_zero_is_unlimited(client: TestClient, runtime: Runtime, clock: Clock) -> None:
    runtime.api_keys.default_rate = 0
    assert statuses(client, key(runtime), 30) == [200] * 30


def test_another_key_is_not_limited_by_the_first(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    first, second = (
        key(runtime, rate_limit=1, rate_burst=1),
        key(runtime, rate_limit=1, rate_burst=1),
    )
    assert statuses(client, first, 2) == [200, 429]
    assert statuses(client, second, 1) == [200]


def test_a_new_limit_applies_at_once_in_this_process(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = key(runtime, rate_limit=1, rate_burst=1)
    assert statuses(client, headers, 2) == [200, 429]
    runtime.api_keys.set_limits(headers["x-api-key"].split("_")[1], 0, None)
    assert statuses(client, headers, 5) == [200] * 5


def test_a_request_the_key_may_not_make_still_takes_a_token(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    headers = key(runtime, Permission.EVENTS_WRITE, rate_limit=1, rate_burst=1)
    assert statuses(client, headers, 2) == [403, 429]


def test_a_call_without_a_valid_key_is_401_not_429(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    runtime.api_keys.default_rate, runtime.api_keys.default_burst = 1, 1
    assert statuses(client, {"x-api-key": "mk_0123456789abcdef_" + "x" * 32}, 3) == [401] * 3


class DeadBuckets(RateLimitStore):
    """A bucket store whose Redis does not answer; counts the calls that reach it."""

    def __init__(self, runtime: Runtime) -> None:
        self.client = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=None)
        super().__init__(self.client, runtime.redis_keys)
        self.calls = 0

    def take(self, key_id: str, rate: int, burst: int) -> Any:
        self.calls += 1
        return super().take(key_id, rate, burst)


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis_down(runtime: Runtime) -> Iterator[tuple[DeadBuckets, Monotonic]]:
    dead, monotonic = DeadBuckets(runtime), Monotonic()
    runtime.rate_limiter.store, runtime.rate_limiter.clock = dead, monotonic
    yield dead, monotonic
    dead.client.close()


def test_with_redis_down_requests_go_through_and_are_counted(
    client: TestClient,
    runtime: Runtime,
    acme: dict[str, str],
    redis_down: tuple[DeadBuckets, Monotonic],
) -> None:
    headers = key(runtime, rate_limit=1, rate_burst=1)
    assert statuses(client, headers, 3) == [200, 200, 200]
    assert runtime.rate_limiter.unchecked == 3
    metrics = client.get("/metrics", headers=acme).text
    assert "meterd_rate_limit_unchecked_total 4.0" in metrics  # and the scrape itself


def test_with_redis_down_only_one_request_every_few_seconds_asks_it(
    client: TestClient, runtime: Runtime, redis_down: tuple[DeadBuckets, Monotonic]
) -> None:
    dead, monotonic = redis_down
    headers = key(runtime, rate_limit=1, rate_burst=1)
    assert statuses(client, headers, 5) == [200] * 5
    assert dead.calls == 1
    monotonic.now += OPEN_SECONDS
    assert statuses(client, headers, 5) == [200] * 5
    assert dead.calls == 2


def test_once_redis_answers_again_the_limit_applies_again(
    client: TestClient, runtime: Runtime, redis_down: tuple[DeadBuckets, Monotonic], clock: Clock
) -> None:
    _, monotonic = redis_down
    headers = key(runtime, rate_limit=1, rate_burst=1)
    assert statuses(client, headers, 2) == [200, 200]
    runtime.rate_limiter.store = runtime.rate_limits  # Redis is back
    monotonic.now += OPEN_SECONDS
    assert statuses(client, headers, 2) == [200, 429]
