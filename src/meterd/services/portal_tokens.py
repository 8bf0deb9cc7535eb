"""Customer portal tokens: signed, expiring, read-only views of one customer.

A token is a JWT (HS256) with ``iss="meterd"``, ``aud="meterd-portal"``, ``org``,
``sub`` (the customer id), ``iat``, ``exp`` and ``jti``, and the signing key's
``kid`` in its header. It is verified without a row of its own: the signature
(with the key ``kid`` names, from the database: ``storage/portal_keys.py``), the
audience, the issuer, the expiry (``LEEWAY_SECONDS`` of clock skew between
replicas, no more) and that the org still exists.

A portal token is never an API key: ``api/auth.py`` refuses it on every ``/v1``
route, and the portal's routes accept nothing else. What it may read is fixed by
its claims, not by anything the request carries.

Keys are cached in the process: the current key for ``CURRENT_TTL`` seconds (a key
retired elsewhere signs here at most that long after), each known key for
``KNOWN_TTL`` seconds (a deleted key verifies here at most that long after).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from meterd.core.domain import CUSTOMER_ID_MAX
from meterd.core.errors import InvalidError, NotFoundError, UnauthorizedError
from meterd.storage.portal_keys import PortalKeyStore, SigningKey

ISSUER = "meterd"
AUDIENCE = "meterd-portal"
ALGORITHM = "HS256"
#: ``expires_in`` bounds and default, in seconds.
MIN_EXPIRES_IN = 60
MAX_EXPIRES_IN = 30 * 24 * 3600
DEFAULT_EXPIRES_IN = 3600
#: Clock skew allowed between the replica that minted and the one verifying.
LEEWAY_SECONDS = 5
CURRENT_TTL = 60.0
KNOWN_TTL = 300.0
_MAX_KNOWN = 1000
_KID = re.compile(r"^pk_[0-9a-f]{16}$")
_REQUIRED = ["iss", "aud", "org", "sub", "iat", "exp", "jti"]
#: What a JWT looks like: three base64url parts (the second and third may not be empty).
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


class PortalTokenInvalid(UnauthorizedError):
    """Not a token meterd signed for the portal (forged, altered, another audience,
    an unknown key, an org that is gone)."""

    title = "Portal link not valid"

    def __init__(self, why: str = "the portal token is not valid") -> None:
        super().__init__(why)


class PortalTokenExpired(UnauthorizedError):
    """A genuine portal token past its ``exp``."""

    title = "Portal link expired"

    def __init__(self) -> None:
        super().__init__("the portal token has expired: ask for a new link")


@dataclass(frozen=True, slots=True)
class PortalAccess:
    """What a verified token lets its bearer read: one customer of one org."""

    org: str
    customer_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    expires_at: datetime


def looks_like_a_jwt(token: str) -> bool:
    """The shape of a JWT (``a.b.c`` in base64url): never the shape of an API key."""
    return bool(_JWT_SHAPE.match(token))


class PortalTokens:
    def __init__(
        self,
        keys: PortalKeyStore,
        org_exists: Callable[[str], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self.org_exists = org_exists
        self.clock = clock
        self._current: tuple[float, SigningKey] | None = None
        self._known: dict[str, tuple[float, SigningKey]] = {}
        self._lock = threading.Lock()

    def mint(
        self, org: str, customer_id: str, now: datetime, expires_in: int = DEFAULT_EXPIRES_IN
    ) -> MintedToken:
        """A token for ``customer_id`` of ``org``, valid ``expires_in`` seconds from
        ``now``. The customer need not have entitlements yet (the page shows none)."""
        if not MIN_EXPIRES_IN <= expires_in <= MAX_EXPIRES_IN:
            raise InvalidError(
                f"expires_in must be from {MIN_EXPIRES_IN} to {MAX_EXPIRES_IN} seconds (30 days)"
            )
        if not customer_id or len(customer_id) > CUSTOMER_ID_MAX:
            raise InvalidError(f"customer_id must be 1 to {CUSTOMER_ID_MAX} characters")
        if not self.org_exists(org):
            raise NotFoundError("organisation", org)
        issued = now.astimezone(UTC).replace(microsecond=0)
        expires_at = issued + timedelta(seconds=expires_in)
        key = self._signing_key(now)
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "org": org,
            "sub": customer_id,
            "iat": int(issued.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": secrets.token_urlsafe(12),
        }
        token = jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})
        return MintedToken(token, expires_at)

    def rotate(self, now: datetime) -> str | None:
        """Retire the current signing key (the next token gets a new one; tokens it
        signed verify until they expire); the kid retired, or None if there was none.
        Other processes keep signing with it for at most ``CURRENT_TTL`` seconds."""
        retired = self.keys.retire_current(now)
        with self._lock:
            self._current = None
        return retired

    def verify(self, token: str, now: datetime) -> PortalAccess:
        """The access ``token`` grants at ``now``; ``PortalTokenExpired`` for a genuine
        token past its expiry, ``PortalTokenInvalid`` for anything else wrong."""
        claims = self._verified_claims(token)
        moment = now.timestamp()
        if not isinstance(claims["exp"], int) or not isinstance(claims["iat"], int):
            raise PortalTokenInvalid()
        if claims["iat"] > moment + LEEWAY_SECONDS:
            raise PortalTokenInvalid("the portal token was issued in the future")
        if claims["exp"] <= moment - LEEWAY_SECONDS:
            raise PortalTokenExpired()
        org, customer = claims["org"], claims["sub"]
        if not isinstance(org, str) or not isinstance(customer, str) or not customer:
            raise PortalTokenInvalid()
        if not self.org_exists(org):
            raise PortalTokenInvalid("the portal token's organisation does not exist")
        return PortalAccess(org, customer, datetime.fromtimestamp(claims["exp"], UTC))

    def _verified_claims(self, token: str) -> dict[str, Any]:
        """The claims of a token whose signature, audience and issuer hold (its times
        are checked by ``verify``, on its clock)."""
        if not looks_like_a_jwt(token):
            raise PortalTokenInvalid()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise PortalTokenInvalid() from None
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str) or not _KID.match(kid):
            raise PortalTokenInvalid()
        key = self._key(kid)
        if key is None:
            raise PortalTokenInvalid("the portal token's signing key is not known")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidTokenError:
            raise PortalTokenInvalid() from None
        return claims

    def _signing_key(self, now: datetime) -> SigningKey:
        at = self.clock()
        with self._lock:
            cached = self._current
        if cached is not None and at - cached[0] < CURRENT_TTL:
            return cached[1]
        key = self.keys.current(now)
        with self._lock:
            self._current = (at, key)
            self._known[key.kid] = (at, key)
        return key

    def _key(self, kid: str) -> SigningKey | None:
        at = self.clock()
        with self._lock:
            cached = self._known.get(kid)
        if cached is not None and at - cached[0] < KNOWN_TTL:
            return cached[1]
        key = self.keys.find(kid)
        with self._lock:
            if key is None:
                self._known.pop(kid, None)
            else:
                if len(self._known) >= _MAX_KNOWN:
                    self._known.clear()
                self._known[kid] = (at, key)
        return key
