"""API keys at rest: only their SHA-256, looked up by their public id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.errors import ConflictError, NotFoundError
from meterd.storage.models import ApiKey


@dataclass(frozen=True, slots=True)
class StoredKey:
    id: str
    org_id: str
    name: str
    secret_hash: str
    permissions: frozenset[str]
    revoked: bool
    expires_at: datetime | None = None
    #: None: the default from settings; 0: unlimited.
    rate_limit: int | None = None
    rate_burst: int | None = None


class ApiKeyStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(self, key: ApiKey) -> None:
        try:
            with self.sessions.begin() as s:
                s.add(key)
        except IntegrityError:
            raise NotFoundError("organisation", key.org_id) from None

    def find(self, key_id: str) -> StoredKey | None:
        with self.sessions() as s:
            row = s.get(ApiKey, key_id)
        if row is None:
            return None
        return StoredKey(
            id=row.id,
            org_id=row.org_id,
            name=row.name,
            secret_hash=row.secret_hash,
            permissions=frozenset(row.permissions.split()),
            revoked=row.revoked_at is not None,
            expires_at=row.expires_at,
            rate_limit=row.rate_limit,
            rate_burst=row.rate_burst,
        )

    def get(self, key_id: str, org_id: str | None = None) -> ApiKey:
        """The key's row (of ``org_id`` when given: another org's key is not found)."""
        with self.sessions() as s:
            row = s.get(ApiKey, key_id)
        if row is None or (org_id is not None and row.org_id != org_id):
            raise NotFoundError("API key", key_id)
        return row

    def revoke(self, key_id: str, now: datetime) -> bool:
        with self.sessions.begin() as s:
            result = s.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return bool(getattr(result, "rowcount", 0) == 1)

    def list(self, org_id: str) -> list[ApiKey]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(ApiKey)
                    .where(ApiKey.org_id == org_id)
                    .order_by(ApiKey.created_at, ApiKey.id)
                )
            )

    def touch(self, key_id: str, now: datetime) -> bool:
        """Record a use; never moves ``last_used_at`` backwards (several replicas write).
        Best effort: False when the database did not answer (the request goes on)."""
        try:
            with self.sessions.begin() as s:
                s.execute(
                    update(ApiKey)
                    .where(
                        ApiKey.id == key_id,
                        or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now),
                    )
                    .values(last_used_at=now)
                )
        except SQLAlchemyError:
            return False
        return True

    def set_limits(self, key_id: str, rate_limit: int | None, rate_burst: int | None) -> None:
        with self.sessions.begin() as s:
            result = s.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id)
                .values(rate_limit=rate_limit, rate_burst=rate_burst)
            )
            if getattr(result, "rowcount", 0) != 1:
                raise NotFoundError("API key", key_id)

    def rotate(
        self,
        old_id: str,
        new: ApiKey,
        old_valid_until: datetime,
        now: datetime,
        *,
        creator_id: str | None = None,
    ) -> None:
        """Add ``new`` and end ``old_id`` at ``old_valid_until`` (or earlier, if it already
        expires earlier), in one transaction; a revoked or expired old key is a conflict.

        With both rows locked, ``new`` must expire by the old key's expiry and by that
        of ``creator_id`` (the key rotating it): a rotation of either committed since
        the caller read them (which ends it sooner) is a conflict, not a way past it."""
        with self.sessions.begin() as s:
            old = s.get(ApiKey, old_id, with_for_update=True)
            if old is None:
                raise NotFoundError("API key", old_id)
            if old.revoked_at is not None:
                raise ConflictError(f"API key {old_id} is revoked: issue a new key instead")
            if old.expires_at is not None and old.expires_at <= now:
                raise ConflictError(f"API key {old_id} has expired: issue a new key instead")
            bounds = [old]
            if creator_id is not None and creator_id != old_id:
                creator = s.get(ApiKey, creator_id, with_for_update=True)
                if creator is None:
                    raise NotFoundError("API key", creator_id)
                bounds.append(creator)
            for key in bounds:
                if key.expires_at is not None and (
                    new.expires_at is None or new.expires_at > key.expires_at
                ):
                    raise ConflictError(
                        f"API key {key.id} now expires at {key.expires_at.isoformat()}, before"
                        " the new key would: it changed meanwhile; rotate again"
                    )
            if old.expires_at is None or old_valid_until < old.expires_at:
                old.expires_at = old_valid_until
            s.add(new)
