"""Organisations at rest: the tenant every other row belongs to."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from meterd.storage.models import Organisation


class OrganisationStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def ensure(self, org_id: str, name: str, now: datetime) -> None:
        """Create the organisation unless it exists (creating twice is harmless)."""
        with self.sessions.begin() as s:
            if s.get(Organisation, org_id) is None:
                s.add(Organisation(id=org_id, name=name, created_at=now))

    def exists(self, org_id: str) -> bool:
        with self.sessions() as s:
            return s.get(Organisation, org_id) is not None

    def all(self) -> list[Organisation]:
        """Every organisation, by id."""
        with self.sessions() as s:
            return list(s.scalars(select(Organisation).order_by(Organisation.id)))
