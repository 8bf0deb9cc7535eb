"""The token bucket of an API key (rate_limit.lua through RateLimitStore): integer
arithmetic, refill by elapsed time, one clock that never runs backwards for a bucket."""

from __future__ import annotations

import time

import pytest
import redis

from meterd.core.redis_keys import RedisKeys
from meterd.storage.rate_limits import MAX_BURST, MAX_RATE, RateLimitStore

from .helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def buckets(redis_client: redis.Redis, redis_prefix: str, clock: Clock) -> RateLimitStore:
    return RateLimitStore(redis_client, RedisKeys(redis_prefix), clock=clock)


def test_a_full_bucket_gives_its_burst_then_refuses(buckets: RateLimitStore) -> None:
    takes = [buckets.take("k1", rate=1, burst=3) for _ in range(4)]
    assert [t.allowed for t in takes] == [True, True, True, False]
    assert [t.remaining for t in takes] == [2, 1, 0, 0]


def test_a_refusal_says_how_long_until_the_next_token(
    buckets: RateLimitStore, clock: Clock
) -> None:
    buckets.take("k1", rate=4, burst=1)
    clock.advance(0.1)
    refused = buckets.take("k1", rate=4, burst=1)
    assert not refused.allowed
    assert refused.wait_micros == 150_000  # a token every 250 ms, 100 ms have passed


def test_tokens_come_back_at_the_rate(buckets: RateLimitStore, clock: Clock) -> None:
    for _ in range(2):
        buckets.take("k1", rate=2, burst=2)
    clock.advance(0.499)
    assert not buckets.take("k1", rate=2, burst=2).allowed
    clock.advance(0.001)
    assert buckets.take("k1", rate=2, burst=2).allowed
    assert not buckets.take("k1", rate=2, burst=2).allowed


def test_a_long_idle_bucket_is_full_not_more(buckets: RateLimitStore, clock: Clock) -> None:
    buckets.take("k1", rate=MAX_RATE, burst=MAX_BURST)
    clock.advance(10 * 365 * 24 * 3600)
    take = buckets.take("k1", rate=MAX_RATE, burst=MAX_BURST)
    assert take.allowed and take.remaining == MAX_BURST - 1  # exact at the largest values


def test_a_clock_behind_the_bucket_refills_nothing(buckets: RateLimitStore, clock: Clock) -> None:
    buckets.take("k1", rate=1, burst=1)
    clock.advance(-30)
    assert not buckets.take("k1", rate=1, burst=1).allowed
    clock.advance(30.5)  # half a second after the last refill: still empty
    assert not buckets.take("k1", rate=1, burst=1).allowed


def test_a_clock_behind_the_bucket_takes_nothing_but_the_token(
    buckets: RateLimitStore, clock: Clock
) -> None:
    """Another API replica whose clock lags (time passed in, not the server's)."""
    assert buckets.take("k1", rate=1, burst=3).remaining == 2
    clock.advance(-30)
    assert [buckets.take("k1", rate=1, burst=3).allowed for _ in range(3)] == [True, True, False]


def test_keys_have_buckets_of_their_own(buckets: RateLimitStore) -> None:
    buckets.take("k1", rate=1, burst=1)
    assert not buckets.take("k1", rate=1, burst=1).allowed
    assert buckets.take("k2", rate=1, burst=1).allowed


def test_a_bucket_expires_once_it_would_be_full_again(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    buckets = RateLimitStore(redis_client, RedisKeys(redis_prefix))  # Redis's clock
    buckets.take("k1", rate=2, burst=4)  # 0.5 s to full, plus the second of slack
    ttl = redis_client.pttl(RedisKeys(redis_prefix).rate_limit("k1"))
    assert 1000 < ttl <= 1500


def test_under_a_callers_clock_a_bucket_outlives_a_stall_of_the_caller(
    buckets: RateLimitStore, redis_client: redis.Redis, redis_prefix: str
) -> None:
    """Redis expires by its own clock, which a caller's clock does not follow: the
    bucket is kept a minute past full, or a slow caller would find it full again."""
    buckets.take("k1", rate=2, burst=4)
    ttl = redis_client.pttl(RedisKeys(redis_prefix).rate_limit("k1"))
    assert 60_000 < ttl <= 60_500


def test_without_a_clock_the_redis_servers_time_refills(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    buckets = RateLimitStore(redis_client, RedisKeys(redis_prefix))
    assert buckets.take("k1", rate=1, burst=1).allowed
    assert not buckets.take("k1", rate=1, burst=1).allowed
    time.sleep(1.05)
    assert buckets.take("k1", rate=1, burst=1).allowed


def test_rates_beyond_exact_arithmetic_are_refused(buckets: RateLimitStore) -> None:
    with pytest.raises(ValueError):
        buckets.take("k1", rate=MAX_RATE + 1, burst=1)
    with pytest.raises(ValueError):
        buckets.take("k1", rate=1, burst=0)
