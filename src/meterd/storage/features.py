"""Features at rest (always within one org): what usage is metered in."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.errors import DuplicateError, NotFoundError
from meterd.storage.models import Feature, Organisation


class FeatureStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(self, feature: Feature) -> Feature:
        """Insert a feature. An org that does not exist is a ``NotFoundError``: it is
        looked up in the same transaction, so the only integrity error left is
        the key taken in the org (``DuplicateError``). Organisations are never
        deleted, so the org cannot vanish between the two."""
        try:
            with self.sessions.begin() as s:
                if s.get(Organisation, feature.org_id) is None:
                    raise NotFoundError("organisation", feature.org_id)
                s.add(feature)
        except IntegrityError:
            raise DuplicateError(
                f"feature {feature.key!r} exists in org {feature.org_id}"
            ) from None
        return feature

    def update(self, org_id: str, key: str, values: dict[str, Any]) -> Feature:
        with self.sessions.begin() as s:
            feature = s.scalars(
                select(Feature).where(Feature.org_id == org_id, Feature.key == key)
            ).first()
            if feature is None:
                raise NotFoundError("feature", key)
            for name, value in values.items():
                setattr(feature, name, value)
        return feature

    def all_of(self, org_id: str) -> list[Feature]:
        with self.sessions() as s:
            return list(
                s.scalars(select(Feature).where(Feature.org_id == org_id).order_by(Feature.key))
            )

    def by_key(self, org_id: str, key: str) -> Feature:
        stmt = select(Feature).where(Feature.org_id == org_id, Feature.key == key)
        with self.sessions() as s:
            feature: Feature | None = s.scalars(stmt).one_or_none()
        if feature is None:
            raise NotFoundError("feature", (org_id, key))
        return feature
