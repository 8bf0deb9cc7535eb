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
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from meterd.errors import InvalidError, UnavailableError
from meterd.storage.api_keys import ApiKeyStore
from meterd.storage.models import ApiKey

CACHE_SECONDS = 10.0
REMEMBER_SECONDS = 300.0
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
    ALL = "*"


class ApiKeyError(InvalidError):
    """A key that cannot be issued as asked."""


class KeyCheckUnavailable(UnavailableError):
    """The database did not answer, and the key was not verified recently enough to
    be accepted without it."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: one org, some permissions."""

    org: str
    key_id: str
    permissions: frozenset[str]

    def may(self, permission: Permission) -> bool:
        return Permission.ALL.value in self.permissions or permission.value in self.permissions


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiKeyService:
    def __init__(self, store: ApiKeyStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        #: SHA-256 of a key -> (when it was last verified against the store, its principal).
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def create(
        self, org: str, permissions: list[Permission], now: datetime, name: str = ""
    ) -> tuple[str, ApiKey]:
        """Issue a key; the token is returned once and never stored."""
        if not permissions:
            raise ApiKeyError("a key needs at least one permission")
        key_id = secrets.token_hex(8)
        token = f"mk_{key_id}_{secrets.token_urlsafe(24)}"
        row = ApiKey(
            id=key_id,
            org_id=org,
            name=name,
            secret_hash=_digest(token),
            permissions=" ".join(sorted({p.value for p in permissions})),
            created_at=now,
        )
        self.store.add(row)
        return token, row

    def authenticate(self, token: str) -> Principal | None:
        """The principal a key grants, or None for anything else (unknown, revoked,
        malformed): callers answer 401 without saying which. Raises what the store
        raises when the database does not answer (see ``remembered``)."""
        match = _KEY.match(token)
        if match is None:
            return None
        digest = _digest(token)
        now = self.clock()
        with self._lock:
            verified = self._cache.get(digest)
        if verified is not None and now - verified[0] < CACHE_SECONDS:
            return verified[1]
        stored = self.store.find(match.group(1))
        if stored is None or stored.revoked or not hmac.compare_digest(stored.secret_hash, digest):
            with self._lock:
                self._cache.pop(digest, None)
            return None
        principal = Principal(stored.org_id, stored.id, stored.permissions)
        with self._lock:
            if len(self._cache) >= _MAX_REMEMBERED:
                self._forget_older_than(now - REMEMBER_SECONDS)
            self._cache[digest] = (now, principal)
        return principal

    def remembered(self, token: str) -> Principal | None:
        """The principal of a key verified within the last ``REMEMBER_SECONDS``, without
        asking the database: for when it does not answer. None for any other key."""
        if _KEY.match(token) is None:
            return None
        with self._lock:
            verified = self._cache.get(_digest(token))
        if verified is None or self.clock() - verified[0] >= REMEMBER_SECONDS:
            return None
        return verified[1]

    def _forget_older_than(self, moment: float) -> None:
        stale = [digest for digest, (at, _) in self._cache.items() if at < moment]
        for digest in stale:
            del self._cache[digest]
        if len(self._cache) >= _MAX_REMEMBERED:
            self._cache.clear()

    def revoke(self, key_id: str, now: datetime) -> bool:
        """Revoke a key; this process forgets it at once (others within ``CACHE_SECONDS``)."""
        revoked = self.store.revoke(key_id, now)
        with self._lock:
            for digest in [d for d, (_, p) in self._cache.items() if p.key_id == key_id]:
                del self._cache[digest]
        return revoked
