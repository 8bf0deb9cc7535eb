"""API keys: issue them, and turn a presented key into the org and permissions it grants.

A key reads ``mk_<id>_<secret>``: the id finds the row, the SHA-256 of the whole
key must match (compared in constant time). RedisKeys carry 192 random bits, so a
slow password hash would add latency without adding safety. Verified keys are
remembered per process:

* for ``CACHE_SECONDS`` they are trusted without asking the database (a revoked
  key stops working within that time), which keeps authentication off the
  database on hot paths;
* for ``REMEMBER_SECONDS`` after their last verification, ``remembered`` still
  names their principal, for the edge to use when the database does not answer:
  the value and reserve routes, which read Redis alone, keep serving the callers
  they served a moment ago. A key found unknown or revoked is forgotten at once.

A key past its ``expires_at`` is refused (``ApiKeyExpired``), also from the cache
and from memory. Its last use is written at most once per ``TOUCH_SECONDS`` per
key and process, never once per request; a failed write is retried a minute later.

``RateLimiter`` takes a token from the key's bucket in Redis per request. Redis
not answering lets the request through (fail open: the counting path has its own
protections), logged at most every ``_WARN_SECONDS`` and counted in ``unchecked``;
for ``OPEN_SECONDS`` after a failure it does not ask Redis at all, so an outage
slows one request per process every few seconds, not every request (the client
retries a refused connection for seconds).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from meterd.errors import (
    ConflictError,
    InvalidError,
    RateLimitedError,
    UnauthorizedError,
    UnavailableError,
)
from meterd.logs import get_logger
from meterd.storage.api_keys import ApiKeyStore
from meterd.storage.models import ApiKey
from meterd.storage.rate_limits import MAX_BURST, MAX_RATE, RateLimitStore, RateLimitStoreError
from meterd.timeutil import utcnow

CACHE_SECONDS = 10.0
REMEMBER_SECONDS = 300.0
#: How often (at most) one process writes a key's last use.
TOUCH_SECONDS = 60.0
#: After Redis failed to answer the rate limit, requests go through unchecked this long.
OPEN_SECONDS = 5.0
_WARN_SECONDS = 10.0
_MAX_REMEMBERED = 10_000
_KEY = re.compile(r"^mk_([0-9a-f]{16})_([A-Za-z0-9_-]{32})$")


class Permission(StrEnum):
    """What a key may do. ``SPENTITLEMENTS:VIEW`` is the seed tenant API's name for
    reading entitlements; ``*`` grants everything."""

    ENTITLEMENTS_VIEW = "ENTITLEMENTS:VIEW"
    ENTITLEMENTS_MANAGE = "ENTITLEMENTS:MANAGE"
    EVENTS_WRITE = "EVENTS:WRITE"
    USAGE_RESERVE = "USAGE:RESERVE"
    SPENTITLEMENTS_VIEW = "SPENTITLEMENTS:VIEW"
    #: Cluster-wide operational metrics (all orgs' volumes): for operators' keys only.
    METRICS_VIEW = "METRICS:VIEW"
    #: List the org's API keys (never their secrets).
    KEYS_VIEW = "KEYS:VIEW"
    #: Rotate the org's API keys (only keys holding no permission the caller lacks).
    KEYS_MANAGE = "KEYS:MANAGE"
    ALL = "*"


class ApiKeyError(InvalidError):
    """A key that cannot be issued as asked."""


class _Never:
    """``NEVER``: a new key asked never to expire (``None`` asks for the default)."""

    def __repr__(self) -> str:
        return "NEVER"


#: Asks ``ApiKeyService.rotate`` for a key that never expires, which only a key
#: that never expires itself may be replaced by.
NEVER = _Never()


class KeyCheckUnavailable(UnavailableError):
    """The database did not answer, and the key was not verified recently enough to
    be accepted without it."""


class ApiKeyExpired(UnauthorizedError):
    """A genuine key past its ``expires_at`` (the API answers 401 saying so)."""

    def __init__(self, key_id: str, expires_at: datetime) -> None:
        super().__init__(f"the API key {key_id} expired at {expires_at.isoformat()}")
        self.key_id = key_id
        self.expires_at = expires_at


class RateLimited(RateLimitedError):
    """The key's bucket is empty (the API answers 429 with Retry-After)."""

    def __init__(self, key_id: str, limit: RateLimit, retry_after: int) -> None:
        super().__init__(
            f"the API key {key_id} is over its rate limit of {limit.rate} requests a second "
            f"(burst {limit.burst}); retry in {retry_after} s"
        )
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``rate`` requests a second, at most ``burst`` at once."""

    rate: int
    burst: int


def effective_limit(
    rate: int | None, burst: int | None, default_rate: int, default_burst: int | None
) -> RateLimit | None:
    """The bucket of a key with these columns (None: unlimited).

    The rate: the key's, else ``default_rate``; 0 is unlimited. The burst: the key's,
    else twice the key's own rate, else ``default_burst``, else twice the default rate.
    """
    if rate is None:
        rate = default_rate
        burst = burst if burst is not None else default_burst
    if rate == 0:
        return None
    rate = min(rate, MAX_RATE)
    return RateLimit(rate, min(max(burst if burst is not None else 2 * rate, 1), MAX_BURST))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: one org, some permissions."""

    org: str
    key_id: str
    permissions: frozenset[str]
    #: The key's token bucket; None: unlimited.
    rate_limit: RateLimit | None = None
    expires_at: datetime | None = None

    def may(self, permission: Permission) -> bool:
        return Permission.ALL.value in self.permissions or permission.value in self.permissions

    def holds_all(self, permissions: frozenset[str]) -> bool:
        """Whether this key may do everything a key with ``permissions`` may."""
        return Permission.ALL.value in self.permissions or permissions <= self.permissions


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What may be shown of a key: everything but its secret and the secret's hash."""

    id: str
    name: str
    #: The public start of the token (``mk_<id>_``): tells keys apart in a config file.
    prefix: str
    permissions: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    #: The key's own setting (None: the default; 0: unlimited).
    rate_limit: int | None
    rate_burst: int | None
    #: What applies (None: unlimited).
    limit: RateLimit | None
    rotated_from: str | None
    #: ``active``, ``expired`` or ``revoked``.
    status: str


def _check_limits(rate_limit: int | None, rate_burst: int | None) -> None:
    if rate_limit is not None and not 0 <= rate_limit <= MAX_RATE:
        raise ApiKeyError(f"the rate limit must lie in 0..{MAX_RATE} (0: unlimited)")
    if rate_burst is not None and not 1 <= rate_burst <= MAX_BURST:
        raise ApiKeyError(f"the burst must lie in 1..{MAX_BURST}")


def _check_rotatable(old: ApiKey, now: datetime) -> None:
    if old.revoked_at is not None:
        raise ConflictError(f"API key {old.id} is revoked: issue a new key instead")
    if old.expires_at is not None and old.expires_at <= now:
        raise ConflictError(f"API key {old.id} has expired: issue a new key instead")


def _within(
    held: frozenset[str], asked: Collection[Permission] | None, key_id: str
) -> frozenset[str]:
    """The permissions a key replacing one that holds ``held`` gets: ``asked`` (None:
    the same), refused if it holds one the old key lacks."""
    if asked is None:
        return held
    wanted = frozenset(p.value for p in asked)
    if not wanted:
        raise ApiKeyError("a key needs at least one permission")
    beyond = set() if Permission.ALL.value in held else wanted - held
    if beyond:
        raise ApiKeyError(
            f"the new key cannot outrank the API key {key_id} it replaces, which does not"
            f" hold {', '.join(sorted(beyond))}"
        )
    return wanted


@dataclass(frozen=True, slots=True)
class _Ceiling:
    """The latest a new key may expire, and whose expiry that is."""

    at: datetime
    whose: str


def _ceiling(old: ApiKey, creator: ApiKey | None) -> _Ceiling | None:
    """The earliest expiry of the key replaced and of the key rotating it (None:
    neither expires)."""
    bounds = []
    if old.expires_at is not None:
        bounds.append(_Ceiling(old.expires_at, f"the API key {old.id} it replaces"))
    if creator is not None and creator.expires_at is not None:
        bounds.append(_Ceiling(creator.expires_at, f"the API key {creator.id} that rotates it"))
    return min(bounds, key=lambda bound: bound.at, default=None)


def _expiry(asked: datetime | _Never | None, ceiling: _Ceiling | None) -> datetime | None:
    """The new key's expiry: ``asked`` (None: the latest allowed), within ``ceiling``."""
    if ceiling is None:
        return asked if isinstance(asked, datetime) else None
    if asked is None:
        return ceiling.at
    if isinstance(asked, _Never) or asked > ceiling.at:
        wanted = (
            "never to expire" if isinstance(asked, _Never) else f"to expire at {asked.isoformat()}"
        )
        raise ApiKeyError(
            f"the new key cannot outlive {ceiling.whose}, which expires at"
            f" {ceiling.at.isoformat()}: it was asked {wanted}; ask for that time or"
            " earlier, or leave expires_at out to take it"
        )
    return asked


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiKeyService:
    def __init__(
        self,
        store: ApiKeyStore,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall: Callable[[], datetime] = utcnow,
        default_rate: int = 0,
        default_burst: int | None = None,
    ) -> None:
        """``clock`` times the cache; ``wall`` is the time of expiry and last use.
        ``default_rate``/``default_burst``: the limit of a key without its own."""
        self.store = store
        self.clock = clock
        self.wall = wall
        self.default_rate = default_rate
        self.default_burst = default_burst
        #: SHA-256 of a key -> (when it was last verified against the store, its principal).
        self._cache: dict[str, tuple[float, Principal]] = {}
        #: key id -> when this process last wrote its last use.
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def create(
        self,
        org: str,
        permissions: list[Permission],
        now: datetime,
        name: str = "",
        *,
        expires_at: datetime | None = None,
        rate_limit: int | None = None,
        rate_burst: int | None = None,
    ) -> tuple[str, ApiKey]:
        """Issue a key; the token is returned once and never stored."""
        if not permissions:
            raise ApiKeyError("a key needs at least one permission")
        _check_limits(rate_limit, rate_burst)
        if expires_at is not None and expires_at <= now:
            raise ApiKeyError("a new key cannot expire in the past")
        token, row = self._new_row(org, name, " ".join(sorted({p.value for p in permissions})), now)
        row.expires_at = expires_at
        row.rate_limit = rate_limit
        row.rate_burst = rate_burst
        self.store.add(row)
        return token, row

    @staticmethod
    def _new_row(org: str, name: str, permissions: str, now: datetime) -> tuple[str, ApiKey]:
        key_id = secrets.token_hex(8)
        token = f"mk_{key_id}_{secrets.token_urlsafe(24)}"
        row = ApiKey(
            id=key_id,
            org_id=org,
            name=name,
            secret_hash=_digest(token),
            permissions=permissions,
            created_at=now,
        )
        return token, row

    def authenticate(self, token: str) -> Principal | None:
        """The principal a key grants, or None for anything else (unknown, revoked,
        malformed): callers answer 401 without saying which. A genuine key past its
        expiry raises ``ApiKeyExpired``. Raises what the store raises when the
        database does not answer (see ``remembered``)."""
        match = _KEY.match(token)
        if match is None:
            return None
        digest = _digest(token)
        now = self.clock()
        with self._lock:
            verified = self._cache.get(digest)
        if verified is not None and now - verified[0] < CACHE_SECONDS:
            principal = verified[1]
        else:
            stored = self.store.find(match.group(1))
            if (
                stored is None
                or stored.revoked
                or not hmac.compare_digest(stored.secret_hash, digest)
            ):
                with self._lock:
                    self._cache.pop(digest, None)
                return None
            principal = Principal(
                stored.org_id,
                stored.id,
                stored.permissions,
                effective_limit(
                    stored.rate_limit, stored.rate_burst, self.default_rate, self.default_burst
                ),
                stored.expires_at,
            )
            with self._lock:
                if len(self._cache) >= _MAX_REMEMBERED:
                    self._forget_older_than(now - REMEMBER_SECONDS)
                self._cache[digest] = (now, principal)
        self._refuse_expired(principal)
        self._touch(principal.key_id, now)
        return principal

    def remembered(self, token: str) -> Principal | None:
        """The principal of a key verified within the last ``REMEMBER_SECONDS``, without
        asking the database: for when it does not answer. None for any other key;
        ``ApiKeyExpired`` for a remembered key past its expiry."""
        if _KEY.match(token) is None:
            return None
        with self._lock:
            verified = self._cache.get(_digest(token))
        if verified is None or self.clock() - verified[0] >= REMEMBER_SECONDS:
            return None
        self._refuse_expired(verified[1])
        return verified[1]

    def _refuse_expired(self, principal: Principal) -> None:
        if principal.expires_at is not None and self.wall() >= principal.expires_at:
            raise ApiKeyExpired(principal.key_id, principal.expires_at)

    def _touch(self, key_id: str, now: float) -> None:
        """Write the key's last use if this process has not for ``TOUCH_SECONDS``."""
        with self._lock:
            last = self._touched.get(key_id)
            if last is not None and now - last < TOUCH_SECONDS:
                return
            if len(self._touched) >= _MAX_REMEMBERED:
                self._touched.clear()
            self._touched[key_id] = now
        if not self.store.touch(key_id, self.wall()):
            with self._lock:  # the database did not answer: try again with the next call
                self._touched.pop(key_id, None)

    def _forget_older_than(self, moment: float) -> None:
        stale = [digest for digest, (at, _) in self._cache.items() if at < moment]
        for digest in stale:
            del self._cache[digest]
        if len(self._cache) >= _MAX_REMEMBERED:
            self._cache.clear()

    def revoke(self, key_id: str, now: datetime) -> bool:
        """Revoke a key; this process forgets it at once (others within ``CACHE_SECONDS``)."""
        revoked = self.store.revoke(key_id, now)
        self._forget_key(key_id)
        return revoked

    def _forget_key(self, key_id: str) -> None:
        with self._lock:
            for digest in [d for d, (_, p) in self._cache.items() if p.key_id == key_id]:
                del self._cache[digest]

    def get(self, key_id: str, org: str | None = None) -> KeyInfo:
        """One key (of ``org`` when given: another org's key is not found)."""
        return self._info(self.store.get(key_id, org))

    def list(self, org: str) -> list[KeyInfo]:
        """The org's keys, oldest first: never their secrets."""
        return [self._info(row) for row in self.store.list(org)]

    def _info(self, row: ApiKey) -> KeyInfo:
        now = self.wall()
        status = (
            "revoked"
            if row.revoked_at is not None
            else "expired"
            if row.expires_at is not None and row.expires_at <= now
            else "active"
        )
        return KeyInfo(
            id=row.id,
            name=row.name,
            prefix=f"mk_{row.id}_",
            permissions=row.permissions.split(),
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            rate_limit=row.rate_limit,
            rate_burst=row.rate_burst,
            limit=effective_limit(
                row.rate_limit, row.rate_burst, self.default_rate, self.default_burst
            ),
            rotated_from=row.rotated_from,
            status=status,
        )

    def set_limits(self, key_id: str, rate_limit: int | None, rate_burst: int | None) -> None:
        """Set a key's own limit (None: the default; rate 0: unlimited). This process
        applies it at once, others within ``CACHE_SECONDS``."""
        _check_limits(rate_limit, rate_burst)
        self.store.set_limits(key_id, rate_limit, rate_burst)
        self._forget_key(key_id)

    def rotate(
        self,
        key_id: str,
        old_valid_until: datetime,
        now: datetime,
        *,
        org: str | None = None,
        expires_at: datetime | _Never | None = None,
        permissions: Collection[Permission] | None = None,
        by: str | None = None,
    ) -> tuple[str, ApiKey]:
        """A new key with the old one's org, name, limits and permissions (or fewer:
        ``permissions``); the old key keeps working until ``old_valid_until`` (or its
        own earlier expiry). Returns the new token, once.

        The new key never outlives nor outranks the key it replaces, nor the key
        ``by`` that rotates it (over the API: the caller's), else a key about to
        expire could mint itself a lasting one. So it expires by the earliest of
        their expiries, and by default then (``expires_at`` None); a later
        ``expires_at``, ``NEVER`` while one of them expires, or a permission the old
        key lacks is an ``ApiKeyError`` naming the bound."""
        if old_valid_until < now:
            raise ApiKeyError(
                "the old key's end lies in the past; to end it now, revoke it instead"
            )
        if isinstance(expires_at, datetime) and expires_at <= now:
            raise ApiKeyError("the new key cannot expire in the past")
        old = self.store.get(key_id, org)
        _check_rotatable(old, now)
        held = frozenset(old.permissions.split())
        granted = " ".join(sorted(_within(held, permissions, old.id)))
        ceiling = _ceiling(old, None if by is None else self.store.get(by, old.org_id))
        token, row = self._new_row(old.org_id, old.name, granted, now)
        row.rate_limit = old.rate_limit
        row.rate_burst = old.rate_burst
        row.expires_at = _expiry(expires_at, ceiling)
        row.rotated_from = old.id
        self.store.rotate(old.id, row, old_valid_until, now, creator_id=by)
        self._forget_key(old.id)
        return token, row


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
        if limit is None:
            return
        with self._lock:
            failed_at = self._failed_at
            if failed_at is not None and self.clock() - failed_at < OPEN_SECONDS:
                self.unchecked += 1
                return
        try:
            take = self.store.take(principal.key_id, limit.rate, limit.burst)
        except RateLimitStoreError as exc:
            self._fail_open(exc)
            return
        if failed_at is not None:
            with self._lock:
                self._failed_at = None
        if not take.allowed:
            retry_after = max(1, -(-take.wait_micros // 1_000_000))
            raise RateLimited(principal.key_id, limit, retry_after)

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
