"""Rate limits per API key: a token from the key's bucket in Redis per request.

Redis not answering lets the request through (fail open: the counting path has
its own protections), logged at most every ``_WARN_SECONDS`` and counted in
``unchecked``; for ``OPEN_SECONDS`` after a failure it does not ask Redis at all,
so an outage slows one request per process every few seconds, not every request
(the client retries a refused connection for seconds).

``check_pipelined`` sends the token's take and a route's Redis command in one
round trip (the value read: its holds read, ``balance.Gate``); it limits, fails
open and refuses exactly as ``check`` followed by the command would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from meterd.core.errors import RateLimitedError
from meterd.logs import get_logger
from meterd.services.api_key_rules import Principal, RateLimit
from meterd.storage.rate_limits import RateLimitStore, RateLimitStoreError, Take, send_alone

#: After Redis failed to answer the rate limit, requests go through unchecked this long.
OPEN_SECONDS = 5.0
_WARN_SECONDS = 10.0

T = TypeVar("T")


class RateLimited(RateLimitedError):
    """The key's bucket is empty (the API answers 429 with Retry-After)."""

    def __init__(self, key_id: str, limit: RateLimit, retry_after: int) -> None:
        super().__init__(
            f"the API key {key_id} is over its rate limit of {limit.rate} requests a second "
            f"(burst {limit.burst}); retry in {retry_after} s"
        )
        self.retry_after = retry_after


class RateLimiter:
    """Takes a token per request from the caller's bucket (``RateLimitStore``)."""

    def __init__(self, store: RateLimitStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        #: Requests let through unchecked because Redis did not answer (this process).
        self.unchecked = 0
        self._warned_at: float | None = None
        self._failed_at: float | None = None
        self._lock = threading.Lock()

    def check(self, principal: Principal) -> None:
        """Raise ``RateLimited`` when the caller's bucket is empty."""
        limit = principal.rate_limit
        if limit is None or self._open():
            return
        try:
            take = self.store.take(principal.key_id, limit.rate, limit.burst)
        except RateLimitStoreError as exc:
            self._fail_open(exc)
            return
        self._answered(principal, take)

    def check_pipelined(
        self,
        principal: Principal,
        client: object,
        command: Callable[[Any], None],
        reply: Callable[[Any], T],
    ) -> T:
        """``check``, then ``reply(r)`` of the reply ``r`` to the command
        ``command(pipeline)`` queues on a pipeline of ``client``; the two in one round
        trip when the bucket lives on ``client`` (else one after the other). ``r`` is
        the exception itself when Redis did not answer the command or refused it.
        Raises ``RateLimited`` (the command's reply unread) as ``check`` does."""
        limit = principal.rate_limit
        if limit is None or self._open() or self.store.client is not client:
            self.check(principal)
            return reply(send_alone(client, command))
        try:
            take, answer = self.store.take_pipelined(
                principal.key_id, limit.rate, limit.burst, command
            )
        except RateLimitStoreError as exc:  # nor the command: send it alone, as check would
            self._fail_open(exc)
            return reply(send_alone(client, command))
        self._answered(principal, take)
        return reply(answer)

    def _open(self) -> bool:
        """Whether Redis failed the limiter in the last ``OPEN_SECONDS`` (then the
        request goes through unchecked, counted)."""
        with self._lock:
            failed_at = self._failed_at
            if failed_at is not None and self.clock() - failed_at < OPEN_SECONDS:
                self.unchecked += 1
                return True
            return False

    def _answered(self, principal: Principal, take: Take) -> None:
        """Redis answered the take: close the limiter again, and refuse an empty bucket."""
        if self._failed_at is not None:
            with self._lock:
                self._failed_at = None
        if not take.allowed:
            assert principal.rate_limit is not None
            retry_after = max(1, -(-take.wait_micros // 1_000_000))
            raise RateLimited(principal.key_id, principal.rate_limit, retry_after)

    def _fail_open(self, exc: RateLimitStoreError) -> None:
        now = self.clock()
        with self._lock:
            self._failed_at = now
            self.unchecked += 1
            warn = self._warned_at is None or now - self._warned_at >= _WARN_SECONDS
            if warn:
                self._warned_at = now
            unchecked = self.unchecked
        if warn:
            get_logger(__name__).warning(
                "rate limits not checked: Redis did not answer; requests go through",
                error=str(exc),
                unchecked_total=unchecked,
            )
