"""Status transitions at rest: the lifecycle job's batches, operator actions, and
the audit trail (``entitlement_transitions``) with a notification per step.

Every step is written in the transaction that moves the entitlement, so the
audit trail, the notification and the new status are committed together or
not at all. Two writers never apply the same step twice: on PostgreSQL the
rows are claimed with ``FOR UPDATE SKIP LOCKED``; on SQLite (one writer at a
time) each row moves by compare-and-set on (status, row_version).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, and_, bindparam, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from meterd.domain import Status
from meterd.errors import NotFoundError, StaleVersionError
from meterd.ids import uuid7
from meterd.lifecycle import (
    Transition,
    due_transitions,
    extend_term,
    next_period_after,
)
from meterd.notifications import (
    NewNotification,
    catch_up_data,
    envelope,
    transition_data,
    transition_notification_id,
    transition_type,
)
from meterd.storage.database import bulk_insert, insert_ignoring_duplicates, within
from meterd.storage.models import (
    LAPSED_RENEWING_SQL,
    Entitlement,
    EntitlementTransition,
    Feature,
    UsagePeriod,
    UtcDateTime,
)
from meterd.storage.notifications import insert_notifications
from meterd.storage.resolution_views import renewal_of


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
    billing_type: str
    term_months: int | None
    term_micros: int | None
    term_anchor: datetime | None


Chain = tuple[DueEntitlement, list[Transition]]


@dataclass(frozen=True, slots=True)
class LifecycleBatch:
    """What one ``advance_due`` call applied."""

    applied: list[Chain]
    #: Entitlements another job moved between this job's read and its write (SQLite).
    lost_races: int
    #: Entitlements found due (a batch that found none means the work is done).
    seen: int


#: What the stores assume when not told: the default ``METERD_LATE_WINDOW``.
DEFAULT_LATE_WINDOW = timedelta(days=35)

#: The steps one lifecycle batch records at most (audit rows; each opens at most one
#: period and sends at most one notification), whatever its entitlement count: a
#: batch of entitlements that each catch up 50 terms records fewer of them, and the
#: rest stay due for the next batch.
MAX_STEPS_PER_BATCH = 10_000


class TransitionStore:
    def __init__(
        self, sessions: sessionmaker[Session], *, late_window: timedelta = DEFAULT_LATE_WINDOW
    ) -> None:
        self.sessions = sessions
        #: Terms that ended before ``now - late_window`` can take no event any more: a
        #: catch-up summarises them (``meterd.lifecycle.due_transitions``).
        self.late_window = late_window

    @contextmanager
    def _transaction(self, *, dry_run: bool) -> Iterator[Session]:
        """One transaction, committed, or rolled back whole on a dry run."""
        with self.sessions() as s:
            s.begin()
            try:
                yield s
            except BaseException:
                s.rollback()
                raise
            if dry_run:
                s.rollback()
            else:
                s.commit()

    def advance_due(
        self, now: datetime, limit: int, job_run_id: str, *, dry_run: bool = False
    ) -> LifecycleBatch:
        """Claim up to ``limit`` entitlements with a clock transition due, move each
        along its chain (``meterd.lifecycle.due_transitions``) and record every step,
        all in one transaction (rolled back on a ``dry_run``: what it would do).

        Finding the work takes a few index range scans (status + the instant that
        falls due), so it follows what is due, not the table size. Each renewal and
        each PAY_PER_USE month opens its usage period; earlier periods keep their
        usage and late events. Bounded: each chain by ``due_transitions`` (at most
        about 50 listed terms, older ones summarised), the batch by
        ``MAX_STEPS_PER_BATCH`` steps (entitlements past it stay due).
        """
        with self._transaction(dry_run=dry_run) as s:
            locking = s.get_bind().dialect.name == "postgresql"
            due = _claim_due(s, now, limit, lock=locking)
            wanted = _within_budget(_chains(due, now, self.late_window), MAX_STEPS_PER_BATCH)
            if locking:
                _move_claimed(s, wanted, now)
                moved = wanted
            else:
                moved = [(d, c) for d, c in wanted if _move_one(s, d, c, now)]
            _record(s, moved, job_run_id, now)
        return LifecycleBatch(applied=moved, lost_races=len(wanted) - len(moved), seen=len(due))

    def settle(
        self,
        entitlement_id: uuid.UUID,
        now: datetime,
        actor: str,
        *,
        session: Session | None = None,
        caused_at: datetime | None = None,
    ) -> list[Transition]:
        """Bring one entitlement's recorded status up to the clock now (after it was
        created or changed): every step that fell due, stamped when it fell due,
        with its audit row and the periods renewals open. Returns the steps.
        ``caused_at``: the steps are due to a change made then (an end moved into
        the past ends it then, not at the new end, which had not come while it was
        still the old one); renewals keep their boundaries. ``session``: do it in
        the caller's transaction."""
        with within(self.sessions, session) as s:
            stmt = (
                select(*_DUE_COLUMNS)
                .join(Feature, Feature.id == Entitlement.feature_id)
                .where(Entitlement.id == entitlement_id)
            )
            if s.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(of=Entitlement)
            row = s.execute(stmt).one_or_none()
            if row is None:
                raise NotFoundError("entitlement", entitlement_id)
            moved = [
                (d, c)
                for d, c in _chains(
                    [DueEntitlement(**row._mapping)], now, self.late_window, caused_at
                )
                if _move_one(s, d, c, now)
            ]  # fmt: skip
            _record(s, moved, actor, now)
        return moved[0][1] if moved else []

    def apply_operator_step(
        self,
        entitlement_id: uuid.UUID,
        decide: Callable[[Status, datetime, Status | None], Transition],
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
            ent, feature = _lock_one(s, entitlement_id)
            if expected_version is not None and ent.row_version != expected_version:
                raise StaleVersionError(entitlement_id, expected_version, ent.row_version)
            step = decide(Status(ent.status), ent.starts_at, _suspended_from(s, ent))
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
                    terminated_at=now if step.to_status is Status.TERMINATED else ent.terminated_at,
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                raise StaleVersionError(entitlement_id, ent.row_version, ent.row_version + 1)
            _record(s, [(_due_of(ent, feature), [step])], actor, now)
            s.flush()
            s.refresh(ent)
            s.expunge(ent)
        return ent, feature

    def history(self, entitlement_id: uuid.UUID) -> list[EntitlementTransition]:
        """The audit trail of one entitlement, oldest first."""
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(EntitlementTransition)
                    .where(EntitlementTransition.entitlement_id == entitlement_id)
                    .order_by(EntitlementTransition.at)
                )
            )


def _suspended_from(s: Session, ent: Entitlement) -> Status | None:
    """The status a SUSPENDED entitlement was suspended from (its latest step into
    SUSPENDED in the audit trail); None when it is not suspended."""
    if ent.status != Status.SUSPENDED.value:
        return None
    found = s.execute(
        select(EntitlementTransition.from_status)
        .where(
            EntitlementTransition.entitlement_id == ent.id,
            EntitlementTransition.to_status == Status.SUSPENDED.value,
        )
        .order_by(EntitlementTransition.at.desc())
        .limit(1)
    ).scalar_one_or_none()
    return None if found is None else Status(found)


def _lock_one(s: Session, entitlement_id: uuid.UUID) -> tuple[Entitlement, str]:
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
    return found[0], found[1]


def _claim_due(s: Session, now: datetime, limit: int, *, lock: bool) -> list[DueEntitlement]:
    """Up to ``limit`` entitlements with a step due, one index range scan per kind of
    step; claimed with ``FOR UPDATE SKIP LOCKED`` when ``lock`` (PostgreSQL), so
    jobs running at once split the work and never wait on each other."""
    expired, grace = Status.EXPIRED.value, Status.GRACE.value
    due_conditions = [
        and_(Entitlement.status == Status.PENDING.value, Entitlement.starts_at <= now),
        and_(Entitlement.status == Status.ACTIVE.value, Entitlement.ends_at <= now),
        and_(Entitlement.status == grace, Entitlement.grace_until <= now),
        and_(
            Entitlement.next_period_at <= now,
            Entitlement.status.in_([Status.ACTIVE.value, grace]),
        ),
        # Reopened: the end moved later after it was recorded EXPIRED or GRACE (a
        # change settles at once; this catches one whose settling was cut short).
        and_(Entitlement.status.in_([expired, grace]), Entitlement.ends_at > now),
        and_(Entitlement.status == expired, Entitlement.grace_until > now),
        # Renewing, yet recorded as lapsed (before renewals were on the calendar).
        LAPSED_RENEWING,
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


def _chains(
    due: Sequence[DueEntitlement],
    now: datetime,
    late_window: timedelta,
    caused_at: datetime | None = None,
) -> list[Chain]:
    """Each due entitlement with the steps that fell due (those with any); status
    steps no earlier than ``caused_at`` when a change made them due. Terms that ended
    before the late window are summarised, so each chain is bounded."""
    chains = []
    for d in due:
        chain = due_transitions(
            Status(d.status),
            d.starts_at,
            d.ends_at,
            d.grace_until,
            now,
            renewal_of(d),
            d.next_period_at,
            history_before=now - late_window,
        )
        if chain and caused_at is not None:
            chain = [_not_before(step, caused_at) for step in chain]
        if chain:
            chains.append((d, chain))
    return chains


def _within_budget(chains: list[Chain], max_steps: int) -> list[Chain]:
    """The first chains whose steps add up to at most ``max_steps`` (at least one)."""
    taken: list[Chain] = []
    steps = 0
    for due, chain in chains:
        if taken and steps + len(chain) > max_steps:
            break
        taken.append((due, chain))
        steps += len(chain)
    return taken


def _not_before(step: Transition, moment: datetime) -> Transition:
    if step.renewal_end is not None or step.month_end is not None or step.at >= moment:
        return step
    return replace(step, at=moment)


def _record(s: Session, moved: Sequence[Chain], job_run_id: str, now: datetime) -> None:
    """The audit rows, their notifications, and the periods renewals and months open
    (a summary step opens none).

    Every status change is notified on its own, also a renewal that changes the
    status (a renewing grant recorded EXPIRED or GRACE reopens by renewing; a
    summary step says how many terms it stands for). The renewals (or months) that
    keep the status are notified once a chain: a single one as itself, several (a
    catch-up: a backdated grant, missed job runs, a resume) as one notification of
    the last, whose ``data`` says how many terms it stands for
    (``meterd.notifications.catch_up_data``). So a backdated grant sends one
    notification for its history, not one per term.
    """
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
        if step.opens_period
    ]
    audit: list[dict[str, Any]] = []
    notifications: list[NewNotification] = []
    for due, chain in moved:
        renewed: list[tuple[dict[str, Any], Transition]] = []
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
            if step.opens_term and step.from_status is step.to_status:
                renewed.append((row, step))
            else:  # a status change, also one that renews (a lapsed grant reopened)
                notifications.append(_renewals_notification([(row, step)], due))
        if renewed:
            notifications.append(_renewals_notification(renewed, due))
    # A month's period may exist already: a flush opens it on first usage.
    insert_ignoring_duplicates(s, UsagePeriod, periods, ["entitlement_id", "period_start"])
    bulk_insert(s, EntitlementTransition, audit)
    insert_notifications(s, notifications, now, fresh=True)


def _new_term(due: DueEntitlement, chain: Sequence[Transition]) -> tuple[Any, Any]:
    """(ends_at, grace_until) after the chain's renewals, or (None, None) if none."""
    renewals = [step.renewal_end for step in chain if step.renewal_end is not None]
    if not renewals or due.ends_at is None:
        return None, None
    return extend_term(due.ends_at, due.grace_until, renewals[-1])


def _move_one(s: Session, due: DueEntitlement, chain: Sequence[Transition], now: datetime) -> bool:
    """Compare-and-set one entitlement along its chain (SQLite)."""
    values: dict[str, Any] = {
        "status": chain[-1].to_status.value,
        "row_version": due.row_version + 1,
        "updated_at": now,
        "next_period_at": next_period_after(list(chain), due.next_period_at),
    }
    ends_at, grace_until = _new_term(due, chain)
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


def _move_claimed(s: Session, wanted: Sequence[Chain], now: datetime) -> None:
    """Move rows this transaction holds locked, with one statement (PostgreSQL)."""
    if not wanted:
        return
    params = []
    for due, chain in wanted:
        ends_at, grace_until = _new_term(due, chain)
        params.append(
            {
                "b_id": due.id,
                "b_status": chain[-1].to_status.value,
                "b_version": due.row_version + 1,
                "b_ends": ends_at if ends_at is not None else due.ends_at,
                "b_grace": grace_until if ends_at is not None else due.grace_until,
                "b_next_period": next_period_after(chain, due.next_period_at),
            }
        )
    # One statement joining arrays (six parameters, whatever the batch size):
    # cheaper to parse and plan than thousands of statements or a VALUES list.
    columns = ("b_id", "b_status", "b_version", "b_ends", "b_grace", "b_next_period")
    arrays = {c: [p[c] for p in params] for c in columns}
    s.execute(_UPDATE_CLAIMED, {**arrays, "b_now": now})


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
    Entitlement.billing_type,
    Entitlement.term_months,
    Entitlement.term_micros,
    Entitlement.term_anchor,
)
#: Renewing entitlements recorded EXPIRED or GRACE: the partial index's own predicate,
#: word for word, so the planner proves the query matches it and reads only that index.
LAPSED_RENEWING: ColumnElement[bool] = and_(text(LAPSED_RENEWING_SQL))


def _due_of(ent: Entitlement, feature: str) -> DueEntitlement:
    """A DueEntitlement of an ORM row: every field but the feature key has its column."""
    columns = {f.name: getattr(ent, f.name) for f in fields(DueEntitlement) if f.name != "feature"}
    return DueEntitlement(feature=feature, **columns)


def _renewals_notification(
    renewed: Sequence[tuple[dict[str, Any], Transition]], due: DueEntitlement
) -> NewNotification:
    """One notification for the renewals (or months) one chain recorded: the last
    one's, with the catch-up in its data when there were several (or it is a
    summary). A step that is not a renewal or a month is notified as itself."""
    last_row, last_step = renewed[-1]
    if len(renewed) == 1 and not last_step.summarised:
        return transition_notification(last_row, due)
    terms = sum(step.summarised or 1 for _, step in renewed)
    summarised = sum(step.summarised for _, step in renewed)
    until = last_step.renewal_end or last_step.month_end
    assert until is not None  # a renewal or a month
    data = catch_up_data(terms=terms, summarised=summarised, first_at=renewed[0][1].at, until=until)
    return transition_notification(last_row, due, extra=data)


def transition_notification(
    row: dict[str, Any], due: DueEntitlement, *, extra: dict[str, Any] | None = None
) -> NewNotification:
    """The notification of one audit row (as inserted into entitlement_transitions);
    ``extra``: more fields for its ``data``."""
    data = transition_data(row["from_status"], row["to_status"], row["reason"], row["job_run_id"])
    return envelope(
        notification_id=transition_notification_id(row["id"]),
        kind=transition_type(row["from_status"], row["to_status"], row["reason"]),
        org=row["org_id"],
        customer_id=due.customer_id,
        feature=due.feature,
        entitlement_id=due.id,
        occurred_at=row["at"],
        data={**data, **(extra or {})},
    )
