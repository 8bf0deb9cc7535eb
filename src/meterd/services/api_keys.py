"""API keys: issue them, and turn a presented key into the org and permissions it grants.

A key reads ``mk_<id>_<secret>``: the id finds the row, the SHA-256 of the whole
key must match (compared in constant time). RedisKeys carry 192 random bits, so a
slow password hash would add latency without adding safety. Verified keys are
remembered per process:

* for ``CACHE_SECONDS`` they are trusted without asking the database, which keeps
  authentication off the database on hot paths: a key revoked, rotated past its
  old end, or given another limit through another process stops working (or
  takes the new limit) here within ``CACHE_SECONDS``; through this process, at
  once. ``cached`` answers from this cache alone, without I/O (the API calls it
  on its event loop), and says None whenever ``authenticate`` has I/O to do;
* for ``REMEMBER_SECONDS`` after their last verification, ``remembered`` still
  names their principal, for the edge to use when the database does not answer:
  the value and reserve routes, which read Redis alone, keep serving the callers
  they served a moment ago. A key found unknown or revoked is forgotten at once.

A key past its ``expires_at`` is refused (``ApiKeyExpired``), also from the cache
and from memory. Its last use is written at most once per ``TOUCH_SECONDS`` per
key and process, never once per request; a failed write is retried a minute later.

The rules of what a key grants and how it may be rotated live in
``meterd.services.api_key_rules``, the rate limiter in
``meterd.services.rate_limiting``; their public names are re-exported here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Collection
from datetime import datetime

from meterd.core.timeutil import utcnow
from meterd.services.api_key_rules import (
    NEVER,
    ApiKeyError,
    ApiKeyExpired,
    KeyCheckUnavailable,
    KeyInfo,
    Never,
    Permission,
    Principal,
    RateLimit,
    check_limit_within,
    check_limits,
    check_rotatable,
    effective_limit,
    expiry_ceiling,
    limits_within,
    new_key_expiry,
    permissions_within,
)
from meterd.services.rate_limiting import OPEN_SECONDS, RateLimited, RateLimiter
from meterd.storage.api_keys import ApiKeyStore
from meterd.storage.models import ApiKey

__all__ = [
    "CACHE_SECONDS",
    "NEVER",
    "OPEN_SECONDS",
    "REMEMBER_SECONDS",
    "TOUCH_SECONDS",
    "ApiKeyError",
    "ApiKeyExpired",
    "ApiKeyService",
    "KeyCheckUnavailable",
    "KeyInfo",
    "Permission",
    "Principal",
    "RateLimit",
    "RateLimited",
    "RateLimiter",
    "effective_limit",
]

CACHE_SECONDS = 10.0
REMEMBER_SECONDS = 300.0
#: How often (at most) one process writes a key's last use.
TOUCH_SECONDS = 60.0
_MAX_REMEMBERED = 10_000
_KEY = re.compile(r"^mk_([0-9a-f]{16})_([A-Za-z0-9_-]{32})$")


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
        by: str | None = None,
    ) -> tuple[str, ApiKey]:
        """Issue a key; the token is returned once and never stored. ``by``: the key
        issuing it (over the API: the caller's), which the new key's rate limit may
        not exceed (see ``limits_within``); None (the CLI, an operator): no bound."""
        if not permissions:
            raise ApiKeyError("a key needs at least one permission")
        check_limits(rate_limit, rate_burst)
        if by is not None:
            creator = self.store.get(by, org)
            rate_limit, rate_burst = limits_within(
                rate_limit, rate_burst, creator, self._limit_of(creator)
            )
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

    def cached(self, token: str) -> Principal | None:
        """The principal of a key this process verified within ``CACHE_SECONDS``
        whose last use needs no write now: what ``authenticate`` would answer, with
        no I/O at all. None when ``authenticate`` must run (a key unknown here or
        verified too long ago, a last use to write, a malformed key). A cached key
        past its expiry raises ``ApiKeyExpired``, as from ``authenticate``."""
        if _KEY.match(token) is None:
            return None
        digest = _digest(token)
        now = self.clock()
        with self._lock:
            verified = self._cache.get(digest)
            if verified is None or now - verified[0] >= CACHE_SECONDS:
                return None
            touched = self._touched.get(verified[1].key_id)
            if touched is None or now - touched >= TOUCH_SECONDS:
                return None
        self._refuse_expired(verified[1])
        return verified[1]

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

    def _limit_of(self, row: ApiKey) -> RateLimit | None:
        """The bucket that applies to the key ``row`` (None: unlimited)."""
        return effective_limit(
            row.rate_limit, row.rate_burst, self.default_rate, self.default_burst
        )

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
            limit=self._limit_of(row),
            rotated_from=row.rotated_from,
            status=status,
        )

    def set_limits(self, key_id: str, rate_limit: int | None, rate_burst: int | None) -> None:
        """Set a key's own limit (None: the default; rate 0: unlimited). This process
        applies it at once, others within ``CACHE_SECONDS``."""
        check_limits(rate_limit, rate_burst)
        self.store.set_limits(key_id, rate_limit, rate_burst)
        self._forget_key(key_id)

    def rotate(
        self,
        key_id: str,
        old_valid_until: datetime,
        now: datetime,
        *,
        org: str | None = None,
        expires_at: datetime | Never | None = None,
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
        key lacks is an ``ApiKeyError`` naming the bound. The new key keeps the old
        one's rate limit, so a key less limited than ``by`` is refused too
        (``check_limit_within``): rotating it would hand ``by``'s holder a key that
        outranks its own."""
        if old_valid_until < now:
            raise ApiKeyError(
                "the old key's end lies in the past; to end it now, revoke it instead"
            )
        if isinstance(expires_at, datetime) and expires_at <= now:
            raise ApiKeyError("the new key cannot expire in the past")
        old = self.store.get(key_id, org)
        check_rotatable(old, now)
        held = frozenset(old.permissions.split())
        granted = " ".join(sorted(permissions_within(held, permissions, old.id)))
        creator = None if by is None else self.store.get(by, old.org_id)
        ceiling = expiry_ceiling(old, creator)
        if creator is not None:
            check_limit_within(self._limit_of(old), self._limit_of(creator), old.id, creator.id)
        token, row = self._new_row(old.org_id, old.name, granted, now)
        row.rate_limit = old.rate_limit
        row.rate_burst = old.rate_burst
        row.expires_at = new_key_expiry(expires_at, ceiling)
        row.rotated_from = old.id
        self.store.rotate(old.id, row, old_valid_until, now, creator_id=by)
        self._forget_key(old.id)
        return token, row
