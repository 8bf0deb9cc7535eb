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
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.domain import BillingType, Status
from meterd.core.errors import InvalidError, NotFoundError, StaleVersionError
from meterd.core.lifecycle import VOIDED_REASON, Transition, TransitionRefused
from meterd.core.notifications import RESET_REASON, VOID_SCHEDULED_REASON
from meterd.core.timeutil import isoformat
from meterd.storage.database import within
from meterd.storage.due_entitlements import (
    DUE_COLUMNS,
    LAPSED_RENEWING,
    Chain,
    DueEntitlement,
    claim_due,
    due_chains,
    due_of,
    move_claimed,
    move_one,
    within_budget,
)
from meterd.storage.models import Entitlement, EntitlementTransition, Feature, UsagePeriod
from meterd.storage.transition_audit import record_steps, transition_notification

__all__ = [
    "DEFAULT_LATE_WINDOW",
    "LAPSED_RENEWING",
    "MAX_STEPS_PER_BATCH",
    "Chain",
    "DueEntitlement",
    "LifecycleBatch",
    "TransitionStore",
    "transition_notification",
]


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
        #: catch-up summarises them (``meterd.core.lifecycle.due_transitions``).
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
        along its chain (``meterd.core.lifecycle.due_transitions``) and record every step,
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
            due = claim_due(s, now, limit, lock=locking)
            wanted = within_budget(due_chains(due, now, self.late_window), MAX_STEPS_PER_BATCH)
            if locking:
                move_claimed(s, wanted, now)
                moved = wanted
            else:
                moved = [(d, c) for d, c in wanted if move_one(s, d, c, now)]
            record_steps(s, moved, job_run_id, now)
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
                select(*DUE_COLUMNS)
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
                for d, c in due_chains(
                    [DueEntitlement(**row._mapping)], now, self.late_window, caused_at
                )
                if move_one(s, d, c, now)
            ]  # fmt: skip
            record_steps(s, moved, actor, now)
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
            _check_version(ent, expected_version)
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
            _record_and_detach(s, ent, [(due_of(ent, feature), [step])], actor, now)
        return ent, feature

    def void(
        self,
        entitlement_id: uuid.UUID,
        at: datetime,
        reason: str,
        *,
        expected_version: int | None,
        actor: str,
        now: datetime,
    ) -> tuple[Entitlement, str, bool]:
        """Void the entitlement from ``at`` (``terminated_at``): usage timed before
        still counts, none after. Due now: every step that fell due before it, then
        TERMINATED at it, recorded with the reason; ahead: an audit row now, and the
        lifecycle job records TERMINATED when it comes (``due_transitions``). Returns
        the row, its feature and whether anything changed (a void retried with the
        same instant changes nothing)."""
        with self.sessions.begin() as s:
            ent, feature = _lock_one(s, entitlement_id)
            if ent.terminated_at is not None:
                if ent.terminated_at == at:
                    s.expunge(ent)
                    return ent, feature, False
                since = isoformat(ent.terminated_at)
                raise TransitionRefused(
                    f"the entitlement is already void or terminated from {since}"
                )
            _check_version(ent, expected_version)
            due = _bump(s, ent, feature, {"terminated_at": at}, now)
            if at <= now:
                moved = [
                    (d, [_with_reason(step, reason) for step in chain])
                    for d, chain in due_chains([due], now, self.late_window)
                ]
                if not all(move_one(s, d, chain, now) for d, chain in moved):
                    raise StaleVersionError(entitlement_id, due.row_version, due.row_version + 1)
            else:
                note = f"{VOID_SCHEDULED_REASON} {isoformat(at)}: {reason or 'voided'}"
                moved = [(due, [_note(ent, note, now)])]
            _record_and_detach(s, ent, moved, actor, now)
        return ent, feature, True

    def reset(
        self,
        entitlement_id: uuid.UUID,
        at: datetime,
        reason: str,
        *,
        expected_version: int | None,
        actor: str,
        now: datetime,
    ) -> tuple[Entitlement, str, bool]:
        """Close the PRE_PAID period containing ``at`` there and open a fresh one from
        it to that period's end (its quantity again, nothing consumed): usage timed
        before counts on the old period, from ``at`` on the new. Audited and notified;
        a reset retried at the same instant changes nothing."""
        with self.sessions.begin() as s:
            ent, feature = _lock_one(s, entitlement_id)
            if ent.billing_type != BillingType.PRE_PAID.value:
                raise InvalidError("a PAY_PER_USE entitlement counts calendar months: no reset")
            _check_version(ent, expected_version)
        # the periods renewals opened by now exist before one of them is split
        self.settle(entitlement_id, now, actor)
        with self.sessions.begin() as s:
            ent, feature = _lock_one(s, entitlement_id)
            if ent.terminated_at is not None and at >= ent.terminated_at:
                raise TransitionRefused("the entitlement takes no usage at that instant (void)")
            period = s.execute(
                select(UsagePeriod)
                .where(UsagePeriod.entitlement_id == entitlement_id, UsagePeriod.period_start <= at)
                .order_by(UsagePeriod.period_start.desc())
                .limit(1)
            ).scalar_one_or_none()
            if period is None or (period.period_end is not None and at >= period.period_end):
                raise TransitionRefused(
                    f"no period of the entitlement contains {isoformat(at)}: a reset splits"
                    " the current period"
                )
            if period.period_start == at:
                s.expunge(ent)
                return ent, feature, False
            end = period.period_end
            period.period_end = at
            period.updated_at = now
            s.add(
                UsagePeriod(
                    org_id=ent.org_id,
                    entitlement_id=entitlement_id,
                    period_start=at,
                    period_end=end,
                    quantity=period.quantity,
                    consumed=Decimal(0),
                    updated_at=now,
                )
            )
            due = _bump(s, ent, feature, {}, now)
            note = f"{RESET_REASON} {isoformat(at)}: {reason or 'reset'}"
            _record_and_detach(s, ent, [(due, [_note(ent, note, now)])], actor, now)
        return ent, feature, True

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


def _set_or_stale(s: Session, ent: Entitlement, values: dict[str, Any], now: datetime) -> None:
    """Set ``values`` and the next row_version if the row is still the one read."""
    result: CursorResult[Any] = s.execute(  # type: ignore[assignment]
        update(Entitlement)
        .where(Entitlement.id == ent.id, Entitlement.row_version == ent.row_version)
        .values(**values, row_version=ent.row_version + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise StaleVersionError(ent.id, ent.row_version, ent.row_version + 1)


def _check_version(ent: Entitlement, expected_version: int | None) -> None:
    """StaleVersionError if the caller expected another row_version."""
    if expected_version is not None and ent.row_version != expected_version:
        raise StaleVersionError(ent.id, expected_version, ent.row_version)


def _bump(
    s: Session, ent: Entitlement, feature: str, values: dict[str, Any], now: datetime
) -> DueEntitlement:
    """Set ``values`` and the next row_version (``_set_or_stale``); the row as the
    audit records it after that write."""
    _set_or_stale(s, ent, values, now)
    return replace(due_of(ent, feature), row_version=ent.row_version + 1, **values)


def _note(ent: Entitlement, note: str, now: datetime) -> Transition:
    """An audit step that keeps the status (a void ahead, a reset): the note says why."""
    status = Status(ent.status)
    return Transition(status, status, now, note)


def _record_and_detach(
    s: Session, ent: Entitlement, moved: Sequence[Chain], actor: str, now: datetime
) -> None:
    """Record the steps with their notifications, then hand the row back as
    committed (refreshed from the database, detached from the session)."""
    record_steps(s, moved, actor, now)
    s.flush()
    s.refresh(ent)
    s.expunge(ent)


def _with_reason(step: Transition, reason: str) -> Transition:
    """The void's TERMINATED step with the operator's reason."""
    if step.to_status is Status.TERMINATED and reason:
        return replace(step, reason=f"{VOIDED_REASON}: {reason}")
    return step


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
