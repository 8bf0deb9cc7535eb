"""The SQL repository: every query meterd runs against the database.

Methods open their own short transaction unless they are handed a session,
so a service can make several writes atomic (the caller owns the transaction).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CursorResult,
    Engine,
    and_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from meterd.domain import BillingType, EntitlementView, Period, Status
from meterd.ids import uuid7
from meterd.keys import period_field
from meterd.lifecycle import (
    Transition,
    due_transitions,
    extend_term,
    next_period_after,
    renews,
)
from meterd.notifications import (
    Crossing,
    NewNotification,
    NotificationType,
    envelope,
    threshold_data,
    transition_data,
    transition_notification_id,
    transition_type,
)
from meterd.quantity import from_micros, to_micros
from meterd.storage.database import bulk_insert, insert_ignoring_duplicates
from meterd.storage.models import (
    Entitlement,
    EntitlementTransition,
    Feature,
    FlushBatch,
    Organisation,
    UsagePeriod,
    UtcDateTime,
)
from meterd.storage.notifications import insert_notifications
from meterd.timeutil import from_epoch_micros, next_month_start


class DuplicateError(ValueError):
    """A key already taken in the org."""


class StaleVersionError(RuntimeError):
    """The row changed since the caller read it (optimistic concurrency on row_version)."""

    def __init__(self, key: object, expected: int, actual: int) -> None:
        super().__init__(f"{key} is at row_version {actual}, not {expected}: read it again")
        self.expected = expected
        self.actual = actual


class NotFoundError(LookupError):
    """A row that should exist does not (carries what was looked for)."""

    def __init__(self, what: str, key: object) -> None:
        super().__init__(f"{what} {key} not found")
        self.what = what
        self.key = key


@dataclass(frozen=True, slots=True)
class LifecycleBatch:
    """What one ``advance_due`` call applied."""

    applied: list[tuple[DueEntitlement, list[Transition]]]
    #: Entitlements another job moved between this job's read and its write (SQLite).
    lost_races: int
    #: Entitlements found due (a batch that found none means the work is done).
    seen: int


@dataclass(frozen=True, slots=True)
class DueEntitlement:
    """What the lifecycle job needs of an entitlement with a transition due."""

    id: uuid.UUID
    org_id: str
    customer_id: str
    feature: str
    status: str
    starts_at: datetime
    ends_at: datetime | None
    grace_until: datetime | None
    row_version: int
    next_period_at: datetime | None
    auto_renew: bool
    contract_mode: str
    quantity: Decimal | None
    renewal_quantity: Decimal | None


def parse_period_field(field: str) -> tuple[uuid.UUID, datetime]:
    ent_hex, start = field.split(":", 1)
    return uuid.UUID(hex=ent_hex), from_epoch_micros(int(start))


class SqlRepository:
    def __init__(self, engine: Engine, session_factory: sessionmaker[Session]) -> None:
        self.engine = engine
        self.sessions = session_factory

    # -- organisations, features, entitlements -----------------------------------

    def ensure_org(self, org_id: str, name: str, now: datetime) -> None:
        with self.sessions.begin() as s:
            if s.get(Organisation, org_id) is None:
                s.add(Organisation(id=org_id, name=name, created_at=now))

    def add_feature(self, feature: Feature) -> Feature:
        try:
            with self.sessions.begin() as s:
                s.add(feature)
        except IntegrityError:
            raise DuplicateError(
                f"feature {feature.key!r} exists in org {feature.org_id}"
            ) from None
        return feature

    def update_feature(self, org_id: str, key: str, values: dict[str, Any]) -> Feature:
        with self.sessions.begin() as s:
            feature = s.scalars(
                select(Feature).where(Feature.org_id == org_id, Feature.key == key)
            ).first()
            if feature is None:
                raise NotFoundError("feature", key)
            for name, value in values.items():
                setattr(feature, name, value)
        return feature

    def features(self, org_id: str) -> list[Feature]:
        with self.sessions() as s:
            return list(
                s.scalars(select(Feature).where(Feature.org_id == org_id).order_by(Feature.key))
            )

    def feature_by_key(self, org_id: str, key: str) -> Feature:
        stmt = select(Feature).where(Feature.org_id == org_id, Feature.key == key)
        with self.sessions() as s:
            feature: Feature | None = s.scalars(stmt).one_or_none()
        if feature is None:
            raise NotFoundError("feature", (org_id, key))
        return feature

    def add_entitlement(self, ent: Entitlement, periods: Sequence[UsagePeriod]) -> Entitlement:
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

    def entitlement(self, entitlement_id: uuid.UUID) -> Entitlement:
        with self.sessions() as s:
            ent = s.get(Entitlement, entitlement_id)
        if ent is None:
            raise NotFoundError("entitlement", entitlement_id)
        return ent

    def update_entitlement(
        self,
        org: str,
        entitlement_id: uuid.UUID,
        expected_version: int,
        values: dict[str, Any],
        *,
        current_period: dict[str, Any],
        now: datetime,
    ) -> None:
        """Change an entitlement if it is still at ``expected_version`` (else
        ``StaleVersionError``), and the period containing ``now`` with it."""
        with self.sessions.begin() as s:
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
                row = s.execute(
                    select(Entitlement.row_version).where(
                        Entitlement.id == entitlement_id, Entitlement.org_id == org
                    )
                ).first()
                if row is None:
                    raise NotFoundError("entitlement", entitlement_id)
                raise StaleVersionError(entitlement_id, expected_version, row[0])
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

    def find_entitlement(self, entitlement_id: uuid.UUID) -> tuple[Entitlement, str] | None:
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

    def customers_of(self, entitlement_id: uuid.UUID) -> tuple[str, str, str]:
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

    # -- lifecycle ----------------------------------------------------------------------

    def advance_due(self, now: datetime, limit: int, job_run_id: str) -> LifecycleBatch:
        """Claim up to ``limit`` entitlements with a clock transition due, move each
        along its chain (``meterd.lifecycle.due_transitions``) and record every step,
        all in one transaction.

        Finding the work takes four index range scans (status + the instant that
        falls due), so it follows what is due, not the table size. On PostgreSQL
        the rows are claimed with ``FOR UPDATE SKIP LOCKED``: jobs running at once
        split the work and never wait on each other or deadlock, and a claimed row
        cannot change before the commit. On SQLite (one writer at a time) each row
        moves by compare-and-set on (status, row_version) instead, so a job that
        read a row another job moved since changes nothing.

        Each renewal and each PAY_PER_USE month opens its usage period; earlier
        periods keep their usage and late events.
        """
        with self.sessions.begin() as s:
            locking = s.get_bind().dialect.name == "postgresql"
            due = self._due(s, now, limit, lock=locking)
            terms = self._latest_period_lengths(
                s, [d.id for d in due if renews(d.auto_renew, d.contract_mode)]
            )
            wanted: dict[uuid.UUID, tuple[DueEntitlement, list[Transition]]] = {}
            for d in due:
                chain = due_transitions(
                    Status(d.status),
                    d.starts_at,
                    d.ends_at,
                    d.grace_until,
                    now,
                    terms.get(d.id),
                    d.next_period_at,
                )
                if chain:
                    wanted[d.id] = (d, chain)
            if locking:
                self._move_claimed(s, wanted, now)
                moved = list(wanted.values())
            else:
                moved = [(d, c) for d, c in wanted.values() if self._move_one(s, d, c, now)]
            self._record(s, moved, job_run_id, now)
        return LifecycleBatch(applied=moved, lost_races=len(wanted) - len(moved), seen=len(due))

    def apply_operator_step(
        self,
        entitlement_id: uuid.UUID,
        decide: Callable[[Status, datetime], Transition],
        *,
        expected_version: int | None,
        actor: str,
        now: datetime,
    ) -> tuple[Entitlement, str]:
        """Apply the step ``decide(status, starts_at)`` returns to one entitlement and
        record it with its notification, in one transaction; returns the updated row
        and its feature key. The row is locked (PostgreSQL) or moved by
        compare-and-set (SQLite), so a racing lifecycle job or operator never has
        its change overwritten. ``expected_version``: refuse if the row moved on."""
        with self.sessions.begin() as s:
            stmt = (
                select(Entitlement, Feature.key)
                .join(Feature, Feature.id == Entitlement.feature_id)
                .where(Entitlement.id == entitlement_id)
            )
            if s.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(of=Entitlement)
            found = s.execute(stmt).one_or_none()
            if found is None:
                raise NotFoundError("entitlement", entitlement_id)
            ent, feature = found
            if expected_version is not None and ent.row_version != expected_version:
                raise StaleVersionError(entitlement_id, expected_version, ent.row_version)
            step = decide(Status(ent.status), ent.starts_at)
            result: CursorResult[Any] = s.execute(  # type: ignore[assignment]
                update(Entitlement)
                .where(
                    Entitlement.id == ent.id,
                    Entitlement.status == ent.status,
                    Entitlement.row_version == ent.row_version,
                )
                .values(
                    status=step.to_status.value,
                    row_version=ent.row_version + 1,
                    updated_at=now,
                    next_period_at=None
                    if step.to_status is Status.TERMINATED
                    else ent.next_period_at,
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                raise StaleVersionError(entitlement_id, ent.row_version, ent.row_version + 1)
            self._record(s, [(_due_of(ent, feature), [step])], actor, now)
            s.flush()
            s.refresh(ent)
            s.expunge(ent)
        return ent, feature

    @staticmethod
    def _due(s: Session, now: datetime, limit: int, *, lock: bool) -> list[DueEntitlement]:
        due_conditions = [
            and_(Entitlement.status == Status.PENDING.value, Entitlement.starts_at <= now),
            and_(Entitlement.status == Status.ACTIVE.value, Entitlement.ends_at <= now),
            and_(Entitlement.status == Status.GRACE.value, Entitlement.grace_until <= now),
            and_(
                Entitlement.next_period_at <= now,
                Entitlement.status.in_([Status.ACTIVE.value, Status.GRACE.value]),
            ),
        ]
        rows: dict[uuid.UUID, DueEntitlement] = {}
        for condition in due_conditions:
            stmt = (
                select(*_DUE_COLUMNS)
                .join(Feature, Feature.id == Entitlement.feature_id)
                .where(condition)
                .limit(limit - len(rows))
            )
            if lock:
                stmt = stmt.with_for_update(of=Entitlement, skip_locked=True)
            for row in s.execute(stmt):
                rows.setdefault(row.id, DueEntitlement(**row._mapping))
            if len(rows) >= limit:
                break
        return list(rows.values())

    @staticmethod
    def _record(
        s: Session,
        moved: Sequence[tuple[DueEntitlement, Sequence[Transition]]],
        job_run_id: str,
        now: datetime,
    ) -> None:
        """The audit rows, their notifications, and the periods renewals and months open."""
        periods = [
            {
                "id": uuid7(),
                "org_id": due.org_id,
                "entitlement_id": due.id,
                "period_start": step.at,
                "period_end": step.renewal_end or step.month_end,
                "quantity": due.renewal_quantity
                if step.renewal_end is not None and due.renewal_quantity is not None
                else due.quantity,
                "consumed": Decimal(0),
                "updated_at": now,
            }
            for due, chain in moved
            for step in chain
            if step.renewal_end is not None or step.month_end is not None
        ]
        audit: list[dict[str, Any]] = []
        notifications: list[NewNotification] = []
        for due, chain in moved:
            for step in chain:
                row = {
                    "id": uuid7(),
                    "org_id": due.org_id,
                    "entitlement_id": due.id,
                    "from_status": step.from_status.value,
                    "to_status": step.to_status.value,
                    "at": step.at,
                    "recorded_at": now,
                    "reason": step.reason,
                    "job_run_id": job_run_id,
                }
                audit.append(row)
                notifications.append(transition_notification(row, due))
        # A month's period may exist already: a flush opens it on first usage.
        insert_ignoring_duplicates(s, UsagePeriod, periods, ["entitlement_id", "period_start"])
        bulk_insert(s, EntitlementTransition, audit)
        insert_notifications(s, notifications, now, fresh=True)

    @staticmethod
    def _new_term(due: DueEntitlement, chain: Sequence[Transition]) -> tuple[Any, Any]:
        """(ends_at, grace_until) after the chain's renewals, or (None, None) if none."""
        renewals = [step.renewal_end for step in chain if step.renewal_end is not None]
        if not renewals or due.ends_at is None:
            return None, None
        return extend_term(due.ends_at, due.grace_until, renewals[-1])

    def _move_one(
        self, s: Session, due: DueEntitlement, chain: Sequence[Transition], now: datetime
    ) -> bool:
        """Compare-and-set one entitlement along its chain (SQLite)."""
        values: dict[str, Any] = {
            "status": chain[-1].to_status.value,
            "row_version": due.row_version + 1,
            "updated_at": now,
            "next_period_at": next_period_after(list(chain), due.next_period_at),
        }
        ends_at, grace_until = self._new_term(due, chain)
        if ends_at is not None:
            values["ends_at"] = ends_at
            values["grace_until"] = grace_until
        result: CursorResult[Any] = s.execute(  # type: ignore[assignment]
            update(Entitlement)
            .where(
                Entitlement.id == due.id,
                Entitlement.status == due.status,
                Entitlement.row_version == due.row_version,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)

    def _move_claimed(
        self,
        s: Session,
        wanted: dict[uuid.UUID, tuple[DueEntitlement, list[Transition]]],
        now: datetime,
    ) -> None:
        """Move rows this transaction holds locked, with one pipelined executemany."""
        if not wanted:
            return
        params = []
        for ent_id, (due, chain) in wanted.items():
            ends_at, grace_until = self._new_term(due, chain)
            params.append(
                {
                    "b_id": ent_id,
                    "b_status": chain[-1].to_status.value,
                    "b_version": due.row_version + 1,
                    "b_ends": ends_at if ends_at is not None else due.ends_at,
                    "b_grace": grace_until if ends_at is not None else due.grace_until,
                    "b_next_period": next_period_after(chain, due.next_period_at),
                    "b_now": now,
                }
            )
        # One statement joining arrays (six parameters, whatever the batch size):
        # cheaper to parse and plan than thousands of statements or a VALUES list.
        columns = ("b_id", "b_status", "b_version", "b_ends", "b_grace", "b_next_period")
        arrays = {c: [p[c] for p in params] for c in columns}
        s.execute(_UPDATE_CLAIMED, {**arrays, "b_now": now})

    @staticmethod
    def _latest_period_lengths(
        s: Session, entitlement_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, timedelta]:
        """Length of each entitlement's most recent period (a renewal repeats it); open
        periods are left out. One query for the whole batch."""
        if not entitlement_ids:
            return {}
        latest = (
            select(
                UsagePeriod.entitlement_id,
                func.max(UsagePeriod.period_start).label("period_start"),
            )
            .where(UsagePeriod.entitlement_id.in_(entitlement_ids))
            .group_by(UsagePeriod.entitlement_id)
            .subquery()
        )
        stmt = select(
            UsagePeriod.entitlement_id, UsagePeriod.period_start, UsagePeriod.period_end
        ).join(
            latest,
            and_(
                UsagePeriod.entitlement_id == latest.c.entitlement_id,
                UsagePeriod.period_start == latest.c.period_start,
            ),
        )
        return {ent_id: end - start for ent_id, start, end in s.execute(stmt) if end is not None}

    def transitions(self, entitlement_id: uuid.UUID) -> list[EntitlementTransition]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(EntitlementTransition)
                    .where(EntitlementTransition.entitlement_id == entitlement_id)
                    .order_by(EntitlementTransition.at)
                )
            )

    # -- resolution ---------------------------------------------------------------

    def resolution_views(
        self, keys: Iterable[tuple[str, str, str]], *, usable_after: datetime
    ) -> dict[tuple[str, str, str], tuple[list[EntitlementView], dict[str, int]]]:
        """For each (org, customer, feature key): the entitlements usage could still
        land on (not terminated, usable window not closed before ``usable_after``),
        and the flushed consumption of their periods (field -> micro-units)."""
        wanted = list(dict.fromkeys(keys))
        result: dict[tuple[str, str, str], tuple[list[EntitlementView], dict[str, int]]] = {
            k: ([], {}) for k in wanted
        }
        if not wanted:
            return result
        by_org: dict[str, list[tuple[str, str, str]]] = {}
        for key in wanted:
            by_org.setdefault(key[0], []).append(key)
        usable = or_(
            func.coalesce(Entitlement.grace_until, Entitlement.ends_at).is_(None),
            func.coalesce(Entitlement.grace_until, Entitlement.ends_at) > usable_after,
        )
        with self.sessions() as s:
            rows = []
            for org, keys_of_org in by_org.items():
                # One index range per org on (org_id, customer_id, ...); a row-value IN
                # over thousands of tuples is planned far worse by PostgreSQL.
                # Plain columns, not ORM objects: this runs for every customer a
                # lifecycle batch touches.
                candidates = s.execute(
                    select(*_VIEW_COLUMNS, Feature.key)
                    .join(Feature, Feature.id == Entitlement.feature_id)
                    .where(
                        Entitlement.org_id == org,
                        Entitlement.customer_id.in_({k[1] for k in keys_of_org}),
                        Feature.key.in_({k[2] for k in keys_of_org}),
                        Entitlement.status != Status.TERMINATED.value,
                        usable,
                    )
                ).all()
                rows += [
                    (row, row.key)
                    for row in candidates
                    if (row.org_id, row.customer_id, row.key) in result
                ]
            ids = [ent.id for ent, _ in rows]
            periods: dict[uuid.UUID, list[Any]] = {}
            if ids:
                for period in s.execute(
                    select(*_PERIOD_COLUMNS).where(UsagePeriod.entitlement_id.in_(ids))
                ):
                    periods.setdefault(period.entitlement_id, []).append(period)
        for ent, feature_key in rows:
            own = periods.get(ent.id, [])
            views, flushed = result[(ent.org_id, ent.customer_id, feature_key)]
            views.append(entitlement_view(ent, own))
            for period in own:
                if period.consumed:
                    flushed[period_field(ent.id, period.period_start)] = to_micros(period.consumed)
        return result

    # -- flush ----------------------------------------------------------------------

    def apply_flush_batch(
        self,
        batch_id: str,
        deltas: dict[str, int],
        now: datetime,
        crossings: Sequence[Crossing] = (),
    ) -> bool:
        """Add a flush batch to the usage periods, exactly once, with a notification
        for each threshold crossing it carries.

        Returns False if the batch was applied before. The ``flush_batches`` row is
        inserted first: a second flush of the same batch blocks on its primary key
        until the first commits, then fails, so a batch is never added twice.
        """
        parsed = sorted((parse_period_field(f), micros) for f, micros in deltas.items() if micros)
        total = sum(micros for _, micros in parsed)
        try:
            with self.sessions.begin() as s:
                s.add(
                    FlushBatch(
                        id=batch_id,
                        committed_at=now,
                        periods=len(parsed),
                        total=from_micros(total),
                    )
                )
                s.flush()
                self._ensure_periods(s, [key for key, _ in parsed], now)
                if parsed:
                    s.execute(
                        update(UsagePeriod.__table__)  # type: ignore[arg-type]
                        .where(
                            UsagePeriod.__table__.c.entitlement_id == bindparam("e_id"),
                            UsagePeriod.__table__.c.period_start == bindparam("p_start"),
                        )
                        .values(
                            consumed=UsagePeriod.__table__.c.consumed
                            + bindparam("delta", type_=UsagePeriod.consumed.type),
                            updated_at=bindparam("now", type_=UsagePeriod.updated_at.type),
                        ),
                        [
                            {"e_id": e, "p_start": p, "delta": from_micros(m), "now": now}
                            for (e, p), m in parsed
                        ],
                    )
                if crossings:
                    insert_notifications(s, self._crossing_payloads(s, crossings), now)
        except IntegrityError:
            if self.batch_committed(batch_id):
                return False
            raise
        return True

    @staticmethod
    def _crossing_payloads(s: Session, crossings: Sequence[Crossing]) -> list[NewNotification]:
        ids = {c.entitlement_id for c in crossings}
        rows = s.execute(
            select(
                UsagePeriod.entitlement_id,
                UsagePeriod.period_start,
                UsagePeriod.quantity,
                Entitlement.org_id,
                Entitlement.customer_id,
                Feature.key,
            )
            .join(Entitlement, Entitlement.id == UsagePeriod.entitlement_id)
            .join(Feature, Feature.id == Entitlement.feature_id)
            .where(UsagePeriod.entitlement_id.in_(ids))
        ).all()
        by_period = {(r.entitlement_id, r.period_start): r for r in rows}
        payloads = []
        for crossing in crossings:
            row = by_period.get((crossing.entitlement_id, crossing.period_start))
            if row is None or row.quantity is None:
                continue  # not a limited PRE_PAID period (cannot happen: ingest.lua checks)
            payloads.append(
                envelope(
                    notification_id=crossing.notification_id,
                    kind=NotificationType.THRESHOLD_CROSSED,
                    org=row.org_id,
                    customer_id=row.customer_id,
                    feature=row.key,
                    entitlement_id=crossing.entitlement_id,
                    occurred_at=crossing.at,
                    data=threshold_data(crossing, to_micros(row.quantity)),
                )
            )
        return payloads

    def _ensure_periods(
        self, s: Session, keys: Sequence[tuple[uuid.UUID, datetime]], now: datetime
    ) -> None:
        """Create the usage period rows a batch touches that do not exist yet
        (PAY_PER_USE months open on their first usage)."""
        if not keys:
            return
        existing = {
            (row[0], row[1])
            for row in s.execute(
                select(UsagePeriod.entitlement_id, UsagePeriod.period_start).where(
                    tuple_(UsagePeriod.entitlement_id, UsagePeriod.period_start).in_(keys)
                )
            )
        }
        missing = [k for k in keys if k not in existing]
        if not missing:
            return
        ents = {
            e.id: e
            for e in s.scalars(
                select(Entitlement).where(Entitlement.id.in_({e for e, _ in missing}))
            )
        }
        rows = []
        for ent_id, start in missing:
            ent = ents.get(ent_id)
            if ent is None:
                raise NotFoundError("entitlement", ent_id)
            end = next_month_start(start) if ent.billing_type == BillingType.PAY_PER_USE else None
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "org_id": ent.org_id,
                    "entitlement_id": ent_id,
                    "period_start": start,
                    "period_end": end,
                    "quantity": ent.quantity,
                    "consumed": Decimal(0),
                    "updated_at": now,
                }
            )
        # The lifecycle job may open the same month at the same time.
        insert_ignoring_duplicates(s, UsagePeriod, rows, ["entitlement_id", "period_start"])

    def batch_committed(self, batch_id: str) -> bool:
        with self.sessions() as s:
            return s.get(FlushBatch, batch_id) is not None

    def flushed_consumption(
        self, keys: Sequence[tuple[uuid.UUID, datetime]], batch_id: str | None
    ) -> tuple[dict[tuple[uuid.UUID, datetime], int], bool]:
        """Flushed micro-units per period, and whether ``batch_id`` is committed,
        read in one statement so both come from the same snapshot."""
        committed: Any = (
            exists(select(FlushBatch.id).where(FlushBatch.id == batch_id))
            if batch_id
            else literal(False)
        )
        stmt = select(
            UsagePeriod.entitlement_id,
            UsagePeriod.period_start,
            UsagePeriod.consumed,
            committed.label("committed"),
        ).where(tuple_(UsagePeriod.entitlement_id, UsagePeriod.period_start).in_(keys))
        with self.sessions() as s:
            rows = s.execute(stmt).all()
            if rows:
                return {(r[0], r[1]): to_micros(r[2]) for r in rows}, bool(rows[0][3])
            return {}, bool(s.execute(select(committed)).scalar())

    def consumption_by_period(self, entitlement_id: uuid.UUID) -> list[UsagePeriod]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(UsagePeriod)
                    .where(UsagePeriod.entitlement_id == entitlement_id)
                    .order_by(UsagePeriod.period_start)
                )
            )


_UPDATE_CLAIMED = text(
    """
    UPDATE entitlements AS e
    SET status = v.status, row_version = v.version, ends_at = v.ends_at,
        grace_until = v.grace_until, next_period_at = v.next_period_at, updated_at = :b_now
    FROM unnest(CAST(:b_id AS uuid[]), CAST(:b_status AS varchar[]),
                CAST(:b_version AS integer[]), CAST(:b_ends AS timestamptz[]),
                CAST(:b_grace AS timestamptz[]), CAST(:b_next_period AS timestamptz[]))
        AS v(id, status, version, ends_at, grace_until, next_period_at)
    WHERE e.id = v.id
    """
).bindparams(bindparam("b_now", type_=UtcDateTime()))
_DUE_COLUMNS = (
    Entitlement.id,
    Entitlement.org_id,
    Entitlement.customer_id,
    Feature.key.label("feature"),
    Entitlement.status,
    Entitlement.starts_at,
    Entitlement.ends_at,
    Entitlement.grace_until,
    Entitlement.row_version,
    Entitlement.next_period_at,
    Entitlement.auto_renew,
    Entitlement.contract_mode,
    Entitlement.quantity,
    Entitlement.renewal_quantity,
)
_VIEW_COLUMNS = (
    Entitlement.id,
    Entitlement.org_id,
    Entitlement.customer_id,
    Entitlement.number,
    Entitlement.priority,
    Entitlement.status,
    Entitlement.billing_type,
    Entitlement.quantity,
    Entitlement.starts_at,
    Entitlement.ends_at,
    Entitlement.grace_until,
)
_PERIOD_COLUMNS = (
    UsagePeriod.entitlement_id,
    UsagePeriod.period_start,
    UsagePeriod.period_end,
    UsagePeriod.quantity,
    UsagePeriod.consumed,
)


def _due_of(ent: Entitlement, feature: str) -> DueEntitlement:
    """A DueEntitlement of an ORM row: every field but the feature key has its column."""
    columns = {f.name: getattr(ent, f.name) for f in fields(DueEntitlement) if f.name != "feature"}
    return DueEntitlement(feature=feature, **columns)


def transition_notification(row: dict[str, Any], due: DueEntitlement) -> NewNotification:
    """The notification of one audit row (as inserted into entitlement_transitions)."""
    return envelope(
        notification_id=transition_notification_id(row["id"]),
        kind=transition_type(row["from_status"], row["to_status"], row["reason"]),
        org=row["org_id"],
        customer_id=due.customer_id,
        feature=due.feature,
        entitlement_id=due.id,
        occurred_at=row["at"],
        data=transition_data(
            row["from_status"], row["to_status"], row["reason"], row["job_run_id"]
        ),
    )


def entitlement_view(ent: Any, periods: Sequence[Any]) -> EntitlementView:
    """An EntitlementView from an entitlement (an ORM row, or a row of
    ``_VIEW_COLUMNS``) and its usage periods (rows with period_start, period_end,
    quantity)."""
    return EntitlementView(
        id=ent.id,
        number=ent.number,
        priority=ent.priority,
        status=Status(ent.status),
        billing_type=BillingType(ent.billing_type),
        quantity=ent.quantity,
        starts_at=ent.starts_at,
        ends_at=ent.ends_at,
        grace_until=ent.grace_until,
        periods=tuple(Period(p.period_start, p.period_end, p.quantity) for p in periods),
    )


__all__ = [
    "NotFoundError",
    "SqlRepository",
    "entitlement_view",
    "parse_period_field",
]
