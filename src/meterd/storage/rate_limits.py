"""Token buckets per API key in Redis (``lua/rate_limit.lua``).

The time comes from the Redis server's ``TIME`` by default: every API replica
takes tokens from the same bucket, and with one clock the refill does not depend
on how far the replicas' clocks drift apart (a replica running ahead would
otherwise refill buckets early). Tests pass a clock instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import redis

from meterd.core.errors import UnavailableError
from meterd.core.redis_keys import RedisKeys
from meterd.core.timeutil import epoch_micros
from meterd.lua import script_source

#: The largest rate (tokens a second) and burst a bucket takes: keeps the script's
#: arithmetic exact in Lua's doubles (see rate_limit.lua).
MAX_RATE = 1_000_000
MAX_BURST = 1_000_000


class RateLimitStoreError(UnavailableError):
    """Redis could not be reached or refused the script."""


@dataclass(frozen=True, slots=True)
class Take:
    """The outcome of taking a token."""

    allowed: bool
    #: Whole tokens left in the bucket.
    remaining: int
    #: Microseconds until the token would be there (0 when allowed).
    wait_micros: int


class RateLimitStore:
    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``clock``: None reads the Redis server's TIME (production)."""
        self.keys = keys
        self.clock = clock
        self._take = client.register_script(script_source("rate_limit.lua"))

    def take(self, key_id: str, rate: int, burst: int) -> Take:
        """Take one token from the bucket of ``key_id`` (refilled at ``rate`` a second,
        holding at most ``burst``)."""
        if not 1 <= rate <= MAX_RATE or not 1 <= burst <= MAX_BURST:
            raise ValueError(f"rate and burst must lie in 1..{MAX_RATE}")
        now = "" if self.clock is None else epoch_micros(self.clock())
        try:
            allowed, micro_tokens, wait = cast(
                "list[Any]",
                self._take(keys=[self.keys.rate_limit(key_id)], args=[rate, burst, now, 1]),
            )
        except redis.RedisError as exc:
            raise RateLimitStoreError(f"Redis did not answer the rate limit: {exc}") from exc
        return Take(
            allowed=int(allowed) == 1,
            remaining=int(micro_tokens) // 1_000_000,
            wait_micros=int(wait),
        )
