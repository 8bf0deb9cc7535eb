"""What an API key is and grants, and the rules for issuing and rotating one.

Pure values and checks (no store, no clock of their own): the permissions, the
principal a key stands for, what may be shown of a key, the token bucket that
applies to it, the errors, and the bounds on a rotated key (it never outlives
nor outranks the key it replaces, nor the key rotating it; a key minted or
rotated by a rate-limited key is never less limited than it). Used by
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
    #: Void or amend an accepted event (``POST /v1/events/void|amend``).
    EVENTS_CORRECT = "EVENTS:CORRECT"
    #: Send events older than the late window (``POST /v1/events?backfill=true``).
    EVENTS_BACKFILL = "EVENTS:BACKFILL"
    SPENTITLEMENTS_VIEW = "SPENTITLEMENTS:VIEW"
    #: Cluster-wide operational metrics (all orgs' volumes): for operators' keys only.
    METRICS_VIEW = "METRICS:VIEW"
    #: List the org's API keys (never their secrets).
    KEYS_VIEW = "KEYS:VIEW"
    #: Issue (``POST /v1/api-keys``) and rotate the org's API keys: never a key
    #: broader, longer-lived or less rate-limited than the caller's; rotate only keys
    #: holding no permission the caller lacks. Listing needs ``KEYS:VIEW``.
    KEYS_MANAGE = "KEYS:MANAGE"
    #: Add, list and remove the org's webhook endpoints; list its notifications with
    #: their deliveries and redeliver one.
    WEBHOOKS_MANAGE = "WEBHOOKS:MANAGE"
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


def _ceiling_text(ceiling: RateLimit, whose: str) -> str:
    return f"{whose}, which is limited to {ceiling.rate} a second (burst {ceiling.burst})"


def limits_within(
    rate_limit: int | None,
    rate_burst: int | None,
    creator: ApiKey,
    ceiling: RateLimit | None,
) -> tuple[int | None, int | None]:
    """The rate and burst columns of a key minted by ``creator``, whose limit is
    ``ceiling`` (None: unlimited, and then the key gets what was asked).

    A key minted by a rate-limited key is never less limited than it, else a key
    limited to 5 a second could mint an unlimited one: ``rate_limit`` and
    ``rate_burst`` at most the creator's, 0 (unlimited) refused. Left out, the rate
    is the creator's own setting (its ``rate_limit``: null follows the default, as
    the creator does); the burst is the creator's own when the rate was left out
    too, else twice the rate as usual, but at most the creator's burst."""
    if ceiling is None:
        return rate_limit, rate_burst
    whose = f"the API key {creator.id} that issues it"
    if rate_limit == 0:
        raise ApiKeyError(
            f"rate_limit: 0 (unlimited) is refused: the new key cannot be less limited than"
            f" {_ceiling_text(ceiling, whose)}; ask for at most {ceiling.rate}"
        )
    if rate_limit is not None and rate_limit > ceiling.rate:
        raise ApiKeyError(
            f"rate_limit: at most {ceiling.rate}: the new key cannot be less limited than"
            f" {_ceiling_text(ceiling, whose)}"
        )
    if rate_burst is not None and rate_burst > ceiling.burst:
        raise ApiKeyError(
            f"rate_burst: at most {ceiling.burst}: the new key cannot be less limited than"
            f" {_ceiling_text(ceiling, whose)}"
        )
    if rate_limit is None:
        return creator.rate_limit, (creator.rate_burst if rate_burst is None else rate_burst)
    if rate_burst is None and min(2 * rate_limit, MAX_BURST) > ceiling.burst:
        rate_burst = ceiling.burst
    return rate_limit, rate_burst


def check_limit_within(
    limit: RateLimit | None, ceiling: RateLimit | None, old_id: str, creator_id: str
) -> None:
    """Refuse rotating a key (limit ``limit``; None: unlimited) less limited than the
    key rotating it (``ceiling``): the new key keeps the old one's limit, and would
    hand the rotating key's holder a key that outranks its own."""
    if ceiling is None:
        return
    if limit is None or limit.rate > ceiling.rate or limit.burst > ceiling.burst:
        field = "rate_limit" if limit is None or limit.rate > ceiling.rate else "rate_burst"
        held = (
            "unlimited"
            if limit is None
            else f"limited to {limit.rate} a second (burst {limit.burst})"
        )
        raise ApiKeyError(
            f"{field}: the new key cannot be less limited than"
            f" {_ceiling_text(ceiling, f'the API key {creator_id} that rotates it')}; the"
            f" API key {old_id} it replaces, whose limit it keeps, is {held}: lower that"
            " key's limit first (meterd keys limit), or rotate it with a key at least as"
            " little limited"
        )
