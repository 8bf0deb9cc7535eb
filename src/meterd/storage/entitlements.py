"""Entitlements and their usage periods at rest: create, read, change.

Status changes do not happen here: the clock's and the operator's steps are
audited, so they live in ``storage/transitions.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.errors import NotFoundError, StaleVersionError
from meterd.core.lifecycle import extend_term
from meterd.storage.database import within
from meterd.storage.models import Entitlement, Feature, Organisation, UsagePeriod


class EntitlementStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(self, ent: Entitlement, periods: Sequence[UsagePeriod]) -> Entitlement:
        """Insert an entitlement with the next number of its org, and its periods."""
        with self.sessions.begin() as s:
            number = s.execute(
                update(Organisation)
                .where(Organisation.id == ent.org_id)
                .values(last_entitlement_number=Organisation.last_entitlement_number + 1)
                .returning(Organisation.last_entitlement_number)
            ).scalar_one_or_none()
            if number is None:
                raise NotFoundError("organisation", ent.org_id)
            ent.number = number
            s.add(ent)
            s.flush()
            for period in periods:
                period.entitlement_id = ent.id
                period.org_id = ent.org_id
                s.add(period)
        return ent

    def add_period(self, period: UsagePeriod) -> None:
        """Add a period; the entitlement's term grows to cover it (grace moves along)."""
        with self.sessions.begin() as s:
            ent = s.get(Entitlement, period.entitlement_id)
            if ent is None:
                raise NotFoundError("entitlement", period.entitlement_id)
            s.add(period)
            if ent.ends_at is not None and (
                period.period_end is None or period.period_end > ent.ends_at
            ):
                ent.ends_at, ent.grace_until = extend_term(
                    ent.ends_at, ent.grace_until, period.period_end
                )
                ent.updated_at = period.updated_at

    def get(self, entitlement_id: uuid.UUID) -> Entitlement:
        with self.sessions() as s:
            ent = s.get(Entitlement, entitlement_id)
        if ent is None:
            raise NotFoundError("entitlement", entitlement_id)
        return ent

    def with_feature(self, entitlement_id: uuid.UUID) -> tuple[Entitlement, str] | None:
        """The entitlement and its feature key, or None."""
        stmt = (
            select(Entitlement, Feature.key)
            .join(Feature, Feature.id == Entitlement.feature_id)
            .where(Entitlement.id == entitlement_id)
        )
        with self.sessions() as s:
            row = s.execute(stmt).one_or_none()
            if row is None:
                return None
            s.expunge(row[0])
            return row[0], row[1]

    def filters_of(self, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        """The dimension filters of those of ``ids`` that have any."""
        found: dict[uuid.UUID, dict[str, Any]] = {}
        ordered = sorted(ids)
        with self.sessions() as s:
            for start in range(0, len(ordered), 500):
                chunk = ordered[start : start + 500]
                stmt = select(Entitlement.id, Entitlement.filters).where(Entitlement.id.in_(chunk))
                for ent_id, filters in s.execute(stmt):
                    if filters:
                        found[ent_id] = dict(filters)
        return found

    def owner_of(self, entitlement_id: uuid.UUID) -> tuple[str, str, str]:
        """(org, customer, feature key) of an entitlement."""
        stmt = (
            select(Entitlement.org_id, Entitlement.customer_id, Feature.key)
            .join(Feature, Feature.id == Entitlement.feature_id)
            .where(Entitlement.id == entitlement_id)
        )
        with self.sessions() as s:
            row = s.execute(stmt).one_or_none()
        if row is None:
            raise NotFoundError("entitlement", entitlement_id)
        return row[0], row[1], row[2]

    def transaction(self) -> Any:
        """A transaction for several writes to be atomic: hand its session to the
        methods that take one (``update``, ``locked``, ``TransitionStore.settle``)."""
        return self.sessions.begin()

    def locked(self, s: Session, org: str, entitlement_id: uuid.UUID) -> tuple[Entitlement, str]:
        """The entitlement of ``org`` and its feature key, locked until ``s`` ends
        (PostgreSQL; SQLite has one writer at a time)."""
        stmt = (
            select(Entitlement, Feature.key)
            .join(Feature, Feature.id == Entitlement.feature_id)
            .where(Entitlement.id == entitlement_id, Entitlement.org_id == org)
            .execution_options(populate_existing=True)
        )
        if s.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=Entitlement)
        found = s.execute(stmt).one_or_none()
        if found is None:
            raise NotFoundError("entitlement", entitlement_id)
        return found[0], found[1]

    def update(
        self,
        org: str,
        entitlement_id: uuid.UUID,
        expected_version: int,
        values: dict[str, Any],
        *,
        current_period: dict[str, Any],
        now: datetime,
        session: Session | None = None,
    ) -> None:
        """Change an entitlement if it is still at ``expected_version`` (else
        ``StaleVersionError``), and the period containing ``now`` with it."""
        with within(self.sessions, session) as s:
            result: CursorResult[Any] = s.execute(  # type: ignore[assignment]
                update(Entitlement)
                .where(
                    Entitlement.id == entitlement_id,
                    Entitlement.org_id == org,
                    Entitlement.row_version == expected_version,
                )
                .values(**values, row_version=expected_version + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                raise self._why_not_updated(s, org, entitlement_id, expected_version)
            if current_period:
                s.execute(
                    update(UsagePeriod)
                    .where(
                        UsagePeriod.entitlement_id == entitlement_id,
                        UsagePeriod.period_start <= now,
                        or_(UsagePeriod.period_end.is_(None), UsagePeriod.period_end > now),
                    )
                    .values(**current_period, updated_at=now)
                    .execution_options(synchronize_session=False)
                )

    def move_last_period_end(
        self, s: Session, entitlement_id: uuid.UUID, end: datetime | None, now: datetime
    ) -> None:
        """End the entitlement's last period (the latest start) at ``end`` (None: open),
        in the transaction of ``s``: usage after the earlier periods, up to the end of
        the term, lands in it (``meterd.core.lifecycle.period_at``). A period that starts
        at or after ``end`` keeps its end (nothing can land in it any more)."""
        last = s.execute(
            select(UsagePeriod.id, UsagePeriod.period_start)
            .where(UsagePeriod.entitlement_id == entitlement_id)
            .order_by(UsagePeriod.period_start.desc())
            .limit(1)
        ).first()
        if last is None or (end is not None and end <= last.period_start):
            return
        s.execute(
            update(UsagePeriod)
            .where(UsagePeriod.id == last.id)
            .values(period_end=end, updated_at=now)
            .execution_options(synchronize_session=False)
        )

    @staticmethod
    def _why_not_updated(
        s: Session, org: str, entitlement_id: uuid.UUID, expected_version: int
    ) -> NotFoundError | StaleVersionError:
        row = s.execute(
            select(Entitlement.row_version).where(
                Entitlement.id == entitlement_id, Entitlement.org_id == org
            )
        ).first()
        if row is None:
            return NotFoundError("entitlement", entitlement_id)
        return StaleVersionError(entitlement_id, expected_version, row[0])

    def ids_of(self, org: str) -> list[uuid.UUID]:
        """The ids of the org's entitlements (one column: for matching an id prefix)."""
        with self.sessions() as s:
            return list(s.scalars(select(Entitlement.id).where(Entitlement.org_id == org)))
