"""What an API key is and grants, and the rules for issuing and rotating one.

Pure values and checks (no store, no clock of their own): the permissions, the
principal a key stands for, what may be shown of a key, the token bucket that
applies to it, the errors, and the bounds on a rotated key (it never outlives
nor outranks the key it replaces, nor the key rotating it). Used by
``meterd.services.api_keys``, which re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from meterd.core.errors import ConflictError, InvalidError, UnauthorizedError, UnavailableError
from meterd.storage.models import ApiKey
from meterd.storage.rate_limits import MAX_BURST, MAX_RATE


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


class Never:
    """``NEVER``: a new key asked never to expire (``None`` asks for the default)."""

    def __repr__(self) -> str:
        return "NEVER"


#: Asks ``ApiKeyService.rotate`` for a key that never expires, which only a key
#: that never expires itself may be replaced by.
NEVER = Never()


class KeyCheckUnavailable(UnavailableError):
    """The database did not answer, and the key was not verified recently enough to
    be accepted without it."""


class ApiKeyExpired(UnauthorizedError):
    """A genuine key past its ``expires_at`` (the API answers 401 saying so)."""

    def __init__(self, key_id: str, expires_at: datetime) -> None:
        super().__init__(f"the API key {key_id} expired at {expires_at.isoformat()}")
        self.key_id = key_id
        self.expires_at = expires_at


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


def check_limits(rate_limit: int | None, rate_burst: int | None) -> None:
    if rate_limit is not None and not 0 <= rate_limit <= MAX_RATE:
        raise ApiKeyError(f"the rate limit must lie in 0..{MAX_RATE} (0: unlimited)")
    if rate_burst is not None and not 1 <= rate_burst <= MAX_BURST:
        raise ApiKeyError(f"the burst must lie in 1..{MAX_BURST}")


def check_rotatable(old: ApiKey, now: datetime) -> None:
    if old.revoked_at is not None:
        raise ConflictError(f"API key {old.id} is revoked: issue a new key instead")
    if old.expires_at is not None and old.expires_at <= now:
        raise ConflictError(f"API key {old.id} has expired: issue a new key instead")


def permissions_within(
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
class Ceiling:
    """The latest a new key may expire, and whose expiry that is."""

    at: datetime
    whose: str


def expiry_ceiling(old: ApiKey, creator: ApiKey | None) -> Ceiling | None:
    """The earliest expiry of the key replaced and of the key rotating it (None:
    neither expires)."""
    bounds = []
    if old.expires_at is not None:
        bounds.append(Ceiling(old.expires_at, f"the API key {old.id} it replaces"))
    if creator is not None and creator.expires_at is not None:
        bounds.append(Ceiling(creator.expires_at, f"the API key {creator.id} that rotates it"))
    return min(bounds, key=lambda bound: bound.at, default=None)


def new_key_expiry(asked: datetime | Never | None, ceiling: Ceiling | None) -> datetime | None:
    """The new key's expiry: ``asked`` (None: the latest allowed), within ``ceiling``."""
    if ceiling is None:
        return asked if isinstance(asked, datetime) else None
    if asked is None:
        return ceiling.at
    if isinstance(asked, Never) or asked > ceiling.at:
        wanted = (
            "never to expire" if isinstance(asked, Never) else f"to expire at {asked.isoformat()}"
        )
        raise ApiKeyError(
            f"the new key cannot outlive {ceiling.whose}, which expires at"
            f" {ceiling.at.isoformat()}: it was asked {wanted}; ask for that time or"
            " earlier, or leave expires_at out to take it"
        )
    return asked
