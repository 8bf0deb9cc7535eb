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
        self.client = client
        self.keys = keys
        self.clock = clock
        self._take = client.register_script(script_source("rate_limit.lua"))

    def take(self, key_id: str, rate: int, burst: int) -> Take:
        """Take one token from the bucket of ``key_id`` (refilled at ``rate`` a second,
        holding at most ``burst``)."""
        try:
            reply = self._take(keys=[self.keys.rate_limit(key_id)], args=self._args(rate, burst))
        except redis.RedisError as exc:
            raise RateLimitStoreError(f"Redis did not answer the rate limit: {exc}") from exc
        return _take_of(reply)

    def _args(self, rate: int, burst: int) -> list[Any]:
        if not 1 <= rate <= MAX_RATE or not 1 <= burst <= MAX_BURST:
            raise ValueError(f"rate and burst must lie in 1..{MAX_RATE}")
        now = "" if self.clock is None else epoch_micros(self.clock())
        return [rate, burst, now, 1]

    def take_pipelined(
        self, key_id: str, rate: int, burst: int, command: Callable[[Any], None]
    ) -> tuple[Take, Any]:
        """``take``, with another command sent in the same round trip after it:
        ``command(pipeline)`` queues it on a pipeline of this store's client (no
        transaction: the take and the command are each atomic, as two calls would
        be). Returns the take and the command's reply, which is the exception
        itself when the command alone failed (``command`` may queue several: then
        the list of their replies, each an exception where it alone failed).
        Raises ``RateLimitStoreError`` when Redis did not answer (nor the command,
        then) or refused the take (the caller sends the command again on its own:
        ``send_alone``)."""
        args = self._args(rate, burst)
        pipe = self.client.pipeline(transaction=False)
        # EVALSHA, not the Script object: a pipeline holding a Script asks SCRIPT
        # EXISTS first, one more round trip on every call
        pipe.evalsha(self._take.sha, 1, self.keys.rate_limit(key_id), *args)
        command(pipe)
        try:
            take_reply, *replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            raise RateLimitStoreError(f"Redis did not answer the rate limit: {exc}") from exc
        reply = _one_or_all(replies)
        if isinstance(take_reply, redis.exceptions.NoScriptError):  # a restarted Redis
            return self.take(key_id, rate, burst), reply
        if isinstance(take_reply, redis.RedisError):
            raise RateLimitStoreError(f"Redis refused the rate limit: {take_reply}")
        return _take_of(take_reply), reply


def _take_of(reply: Any) -> Take:
    allowed, micro_tokens, wait = cast("list[Any]", reply)
    return Take(
        allowed=int(allowed) == 1,
        remaining=int(micro_tokens) // 1_000_000,
        wait_micros=int(wait),
    )


def send_alone(client: Any, command: Callable[[Any], None]) -> Any:
    """The reply to the one command ``command(pipeline)`` queues on a pipeline of the
    Redis ``client``, or the error Redis answered (or failed to answer) it with: as
    ``RateLimitStore.take_pipelined`` answers it, for a request sent without a take
    (several commands queued: the list of their replies, or the one error when Redis
    answered none)."""
    pipe = client.pipeline(transaction=False)
    command(pipe)
    try:
        return _one_or_all(pipe.execute(raise_on_error=False))
    except redis.RedisError as exc:
        return exc


def _one_or_all(replies: list[Any]) -> Any:
    """The reply to the one command a route queued, or the list of its replies."""
    return replies[0] if len(replies) == 1 else replies
