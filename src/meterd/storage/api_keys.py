"""API keys at rest: only their SHA-256, looked up by their public id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from meterd.errors import NotFoundError
from meterd.storage.models import ApiKey


@dataclass(frozen=True, slots=True)
class StoredKey:
    id: str
    org_id: str
    name: str
    secret_hash: str
    permissions: frozenset[str]
    revoked: bool


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
        )

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
                s.scalars(select(ApiKey).where(ApiKey.org_id == org_id).order_by(ApiKey.created_at))
            )
