"""API keys: issue them, and turn a presented key into the org and permissions it grants.

A key reads ``mk_<id>_<secret>``: the id finds the row, the SHA-256 of the whole
key must match (compared in constant time). RedisKeys carry 192 random bits, so a
slow password hash would add latency without adding safety. Verified keys are
remembered for a few seconds per process (a revoked key stops working within
``CACHE_SECONDS``), which keeps authentication off the database on hot paths.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from meterd.errors import InvalidError
from meterd.storage.api_keys import ApiKeyStore
from meterd.storage.models import ApiKey

CACHE_SECONDS = 10.0
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
    def __init__(self, store: ApiKeyStore) -> None:
        self.store = store
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
        malformed): callers answer 401 without saying which."""
        match = _KEY.match(token)
        if match is None:
            return None
        digest = _digest(token)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        stored = self.store.find(match.group(1))
        if stored is None or stored.revoked:
            return None
        if not hmac.compare_digest(stored.secret_hash, digest):
            return None
        principal = Principal(stored.org_id, stored.id, stored.permissions)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + CACHE_SECONDS, principal)
        return principal

    def revoke(self, key_id: str, now: datetime) -> bool:
        return self.store.revoke(key_id, now)
