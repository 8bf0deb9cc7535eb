"""Allotments at rest: the carve of a parent's grant into a child entitlement.

Every write here takes the caller's session: the service makes the whole carve
(the parent's lower limit, the child, its period and the allotment row) one
transaction, with the parent row locked first (``lock_parent``).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from decimal import Decimal

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from meterd.core.domain import Status
from meterd.core.errors import NotFoundError
from meterd.storage.models import Allotment, Entitlement, Feature, Organisation, UsagePeriod


class AllotmentStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def transaction(self) -> Session:
        """A transaction (use as ``with store.transaction() as s``)."""
        return self.sessions.begin()  # type: ignore[return-value]

    @staticmethod
    def lock_parent(s: Session, org: str, parent_id: uuid.UUID) -> None:
        """Take the lock that serialises carves of one parent, first thing in the
        transaction. PostgreSQL: ``SELECT ... FOR UPDATE`` of the row (waits for a
        carve in flight, in any process). SQLite: a write that changes nothing takes
        the database's one write lock before anything is read (a read first would
        be read outside it, and a later write would then fail, not wait)."""
        if s.get_bind().dialect.name == "postgresql":
            s.execute(
                select(Entitlement.id)
                .where(Entitlement.id == parent_id, Entitlement.org_id == org)
                .with_for_update()
            )
            return
        s.execute(
            update(Entitlement)
            .where(Entitlement.id == parent_id, Entitlement.org_id == org)
            .values(updated_at=Entitlement.updated_at)
            .execution_options(synchronize_session=False)
        )

    @staticmethod
    def by_key(s: Session, parent_id: uuid.UUID, key: str) -> Allotment | None:
        return s.scalars(
            select(Allotment).where(
                Allotment.parent_id == parent_id, Allotment.idempotency_key == key
            )
        ).one_or_none()

    @staticmethod
    def current_period(s: Session, entitlement_id: uuid.UUID, now: datetime) -> UsagePeriod | None:
        """The stored period of ``entitlement_id`` containing ``now`` (None: none)."""
        return s.scalars(
            select(UsagePeriod)
            .where(
                UsagePeriod.entitlement_id == entitlement_id,
                UsagePeriod.period_start <= now,
                or_(UsagePeriod.period_end.is_(None), UsagePeriod.period_end > now),
            )
            .order_by(UsagePeriod.period_start.desc())
            .limit(1)
            .execution_options(populate_existing=True)
        ).one_or_none()

    @staticmethod
    def set_period_quantity(
        s: Session, period_id: uuid.UUID, quantity: Decimal, now: datetime
    ) -> None:
        s.execute(
            update(UsagePeriod)
            .where(UsagePeriod.id == period_id)
            .values(quantity=quantity, updated_at=now)
            .execution_options(synchronize_session=False)
        )

    @staticmethod
    def add_child(
        s: Session, child: Entitlement, period: UsagePeriod, allotment: Allotment
    ) -> Entitlement:
        """Insert the child (with the next number of its org), its first period and
        the allotment row that names it."""
        number = s.execute(
            update(Organisation)
            .where(Organisation.id == child.org_id)
            .values(last_entitlement_number=Organisation.last_entitlement_number + 1)
            .returning(Organisation.last_entitlement_number)
        ).scalar_one_or_none()
        if number is None:
            raise NotFoundError("organisation", child.org_id)
        child.number = number
        s.add(child)
        s.flush()
        period.entitlement_id = child.id
        period.org_id = child.org_id
        allotment.child_id = child.id
        s.add_all([period, allotment])
        s.flush()
        return child

    def allotted(
        self, ids: Collection[uuid.UUID], session: Session | None = None
    ) -> dict[uuid.UUID, Decimal]:
        """What the live children of each parent in ``ids`` hold (children recorded
        TERMINATED left out); parents without any are not in the answer."""
        if session is not None:
            found = allotted_by_parent(session, ids)
        else:
            with self.sessions() as s:
                found = allotted_by_parent(s, ids)
        # every carve is positive: a parent with a live child holds more than zero
        return {parent_id: held for parent_id, held in found.items() if held > 0}

    def parents_of(self, child_ids: Collection[uuid.UUID]) -> list[tuple[str, str, str]]:
        """(org, customer, feature key) of the parents of the allotted children among
        ``child_ids``, each once (children not made by an allotment: none)."""
        if not child_ids:
            return []
        parent = aliased(Entitlement)
        stmt = (
            select(parent.org_id, parent.customer_id, Feature.key)
            .select_from(Allotment)
            .join(parent, parent.id == Allotment.parent_id)
            .join(Feature, Feature.id == parent.feature_id)
            .where(Allotment.child_id.in_(sorted(child_ids)))
            .distinct()
        )
        with self.sessions() as s:
            return [(org, customer, key) for org, customer, key in s.execute(stmt)]

    def children(self, org: str, parent_id: uuid.UUID) -> list[tuple[Allotment, Entitlement]]:
        """The allotments of a parent with their children, oldest first."""
        stmt = (
            select(Allotment, Entitlement)
            .join(Entitlement, Entitlement.id == Allotment.child_id)
            .where(Allotment.org_id == org, Allotment.parent_id == parent_id)
            .order_by(Allotment.created_at, Allotment.id)
        )
        with self.sessions() as s:
            rows = [(a, e) for a, e in s.execute(stmt)]
            for a, e in rows:
                s.expunge(a)
                s.expunge(e)
        return rows


def allotted_by_parent(s: Session, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, Decimal]:
    """What the live (not recorded TERMINATED) children of each parent in ``ids``
    hold: every parent that ever allotted is in the answer (0 when all its children
    are terminated), the others are not. One query for all of them."""
    if not ids:
        return {}
    stmt = (
        select(Allotment.parent_id, Allotment.quantity, Entitlement.status)
        .join(Entitlement, Entitlement.id == Allotment.child_id)
        .where(Allotment.parent_id.in_(sorted(ids)))
    )
    # Summed here: SQLite stores exact decimals as blobs (no SUM in SQL).
    found: dict[uuid.UUID, Decimal] = {}
    for parent_id, quantity, status in s.execute(stmt):
        live = quantity if status != Status.TERMINATED.value else Decimal(0)
        found[parent_id] = found.get(parent_id, Decimal(0)) + live
    return found
