"""Portal signing keys at rest (``portal_signing_keys``, see ``models/portal.py``).

The current key is the newest generation, unless it is retired; there is none
until the first token is minted, and then ``current`` creates it. Creation is
race-safe without a lock: the new row takes generation ``newest + 1``, which is
unique, so of two replicas creating it at once one insert fails, and that one
reads the winner's key. Both then sign with the same key.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from meterd.storage.models import PortalSigningKey

#: Bytes of a new key's secret.
SECRET_BYTES = 32
#: Tries of ``current`` when other replicas keep winning the race (each loss
#: means a key now exists, so a second try finds it).
_TRIES = 3


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    secret: bytes
    retired: bool = False


def _value(row: PortalSigningKey) -> SigningKey:
    return SigningKey(row.kid, bytes(row.secret), row.retired_at is not None)


class PortalKeyStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def current(self, now: datetime) -> SigningKey:
        """The key new tokens are signed with, created if there is none."""
        for _ in range(_TRIES):
            newest = self._newest()
            if newest is not None and newest.retired_at is None:
                return _value(newest)
            generation = 1 if newest is None else newest.generation + 1
            try:
                return self._create(generation, now)
            except IntegrityError:
                continue  # another replica created this generation first: read it
        raise RuntimeError("the portal signing key could not be created")  # pragma: no cover

    def find(self, kid: str) -> SigningKey | None:
        """The key named ``kid`` (retired or not), or None."""
        with self.sessions() as s:
            row = s.get(PortalSigningKey, kid)
        return None if row is None else _value(row)

    def retire_current(self, now: datetime) -> str | None:
        """Retire the current key (the next mint creates a new one); the kid retired,
        or None when there was none. Tokens it signed verify until they expire."""
        newest = self._newest()
        if newest is None or newest.retired_at is not None:
            return None
        with self.sessions.begin() as s:
            s.execute(
                update(PortalSigningKey)
                .where(PortalSigningKey.kid == newest.kid, PortalSigningKey.retired_at.is_(None))
                .values(retired_at=now)
            )
        return newest.kid

    def count(self) -> int:
        """How many keys exist, retired ones included."""
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(PortalSigningKey)) or 0)

    def _newest(self) -> PortalSigningKey | None:
        with self.sessions() as s:
            row: PortalSigningKey | None = s.scalars(
                select(PortalSigningKey).order_by(PortalSigningKey.generation.desc()).limit(1)
            ).first()
            return row

    def _create(self, generation: int, now: datetime) -> SigningKey:
        row = PortalSigningKey(
            kid=f"pk_{secrets.token_hex(8)}",
            generation=generation,
            secret=secrets.token_bytes(SECRET_BYTES),
            created_at=now,
        )
        with self.sessions.begin() as s:
            s.add(row)
        return _value(row)
