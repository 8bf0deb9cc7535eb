"""Storing the carries that became final (issue 23 item 1; ``meterd.core.rollover``).

A renewed term's carry is a function of the consumption of the terms before it,
and late events change those until the late window is over. Once the term
before a period ended at or before ``before`` (the caller passes the instant
before which nothing is left to count: the late window and the flush lag behind
now, ``services/rollover.py``), its consumption is final, and so is the period's
carry: ``finalise`` stores it in ``usage_periods.rolled_over``. The walk
(``lifecycle.limit_units``, ingest's ``rolled_limit``) stops at a stored carry, so
storing them bounds it; the figure is the one the walk computes from the same
consumptions, so storing it changes no limit. A period that carries nothing (not
a renewed term, or the entitlement does not roll over) stores 0.

Audited exactly once: each carry is stored by compare-and-set (``rolled_over IS
NULL``), and the carries a call stored are written to the audit trail
(``entitlement_transitions``, one row per entitlement a call: the status stays,
the reason lists each carry) in the same transaction. Two racing callers compute
the same figure from the same final data; on PostgreSQL the second one's update
waits for the first to commit and then finds the carry stored, on SQLite (one
writer at a time) it runs after it: either way one of them stores and audits
it. Rows are locked in the flush's order (entitlement id, period start), so a
finaliser and a flush never wait on each other in a cycle.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.domain import EntitlementView, Period
from meterd.core.ids import uuid7
from meterd.core.lifecycle import limit_units, period_at, renews_at
from meterd.core.quantity import format_quantity, from_units, to_units
from meterd.core.rollover import carries_reason
from meterd.core.timeutil import isoformat
from meterd.storage.models import Entitlement, EntitlementTransition, Feature, UsagePeriod
from meterd.storage.resolution_views import entitlement_view

_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class FinaliseBatch:
    """What one ``finalise`` call did."""

    #: Entitlements found with a carry to store (call again while it is the limit).
    entitlements: int
    #: Carries this call stored and audited (a racing call may have stored others).
    carries: int


class RolloverStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def finalise(
        self, before: datetime, *, now: datetime, job_run_id: str, limit: int = 1000
    ) -> FinaliseBatch:
        """Store the carry of every period of an entitlement with rollover settings
        that starts after the entitlement does and at or before ``before`` (so the
        term before it ended by then), at most ``limit`` entitlements a call, in one
        transaction, with an audit row (recorded ``now`` by ``job_run_id``) for each
        entitlement whose carries this call stored."""
        carries = 0
        with self.sessions.begin() as s:
            ids = list(
                s.scalars(
                    select(UsagePeriod.entitlement_id)
                    .join(Entitlement, Entitlement.id == UsagePeriod.entitlement_id)
                    .where(
                        Entitlement.rollover_max.is_not(None),
                        UsagePeriod.rolled_over.is_(None),
                        UsagePeriod.period_start <= before,
                        UsagePeriod.period_start > Entitlement.starts_at,
                    )
                    .distinct()
                    .order_by(UsagePeriod.entitlement_id)
                    .limit(limit)
                )
            )
            for ent_id in sorted(ids):  # the flush's lock order
                carries += _finalise_one(s, ent_id, before, now, job_run_id)
        return FinaliseBatch(entitlements=len(ids), carries=carries)


def _finalise_one(
    s: Session, ent_id: uuid.UUID, before: datetime, now: datetime, job_run_id: str
) -> int:
    """Store the final carries of one entitlement; returns how many this call stored."""
    ent, scale = s.execute(
        select(Entitlement, Feature.scale)
        .join(Feature, Feature.id == Entitlement.feature_id)
        .where(Entitlement.id == ent_id)
    ).one()
    rows = list(
        s.scalars(
            select(UsagePeriod)
            .where(UsagePeriod.entitlement_id == ent_id)
            .order_by(UsagePeriod.period_start)
        )
    )
    view = entitlement_view(ent, rows, scale=scale)
    consumed = {row.period_start: to_units(row.consumed, scale) for row in rows}

    def consumed_of(period: Period) -> int:
        return consumed.get(period.start, 0)  # a term never stored consumed nothing

    stored: list[tuple[str, str, str]] = []  # the carries this call stored, for the audit
    # a rollover_max of 0 carries nothing: its zeros are stored (the walk stops) unaudited
    audited = view.rolls_over
    for i, row in enumerate(rows):
        if row.rolled_over is not None or row.period_start > before:
            continue
        if row.period_start <= ent.starts_at:
            continue
        period = view.periods[i]
        carry = 0
        renewed = period.quantity is not None and renews_at(view, period.start)
        if renewed:
            assert period.quantity is not None
            carry = limit_units(view, period, consumed_of) - to_units(period.quantity, scale)
        value = from_units(carry, scale)
        if _store(s, row.id, value) and renewed and audited:
            stored.append((format_quantity(value), *_term_before(view, period)))
        # the walks of the periods after it stop here now
        periods = list(view.periods)
        periods[i] = replace(period, rolled_over=value)
        view = replace(view, periods=tuple(periods))
    if stored:
        _audit(s, ent, carries_reason(stored), now, job_run_id)
    return len(stored)


def _term_before(view: EntitlementView, period: Period) -> tuple[str, str]:
    """Where the term a renewed period carried from starts and ends."""
    before = period_at(view, period.start - _ONE_US)
    if before is None:  # cannot happen: a renewed term follows one
        return isoformat(view.starts_at), isoformat(period.start)
    return isoformat(before.start), isoformat(before.end or period.start)


def _store(s: Session, period_id: uuid.UUID, carry: Decimal) -> bool:
    """Store one carry unless a racing call stored it first (compare-and-set)."""
    result: CursorResult[Any] = s.execute(  # type: ignore[assignment]
        update(UsagePeriod)
        .where(UsagePeriod.id == period_id, UsagePeriod.rolled_over.is_(None))
        .values(rolled_over=carry)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _audit(s: Session, ent: Entitlement, reason: str, now: datetime, job_run_id: str) -> None:
    """One audit row: the status stays, the reason says what carried. Stamped ``now``
    (the instant the carries were found final), moved on by a microsecond if a step
    of the same status is stamped then already (``uq_transitions_step``)."""
    at = now
    while s.execute(
        select(EntitlementTransition.id).where(
            EntitlementTransition.entitlement_id == ent.id,
            EntitlementTransition.at == at,
            EntitlementTransition.from_status == ent.status,
            EntitlementTransition.to_status == ent.status,
        )
    ).first():
        at += _ONE_US
    s.add(
        EntitlementTransition(
            id=uuid7(),
            org_id=ent.org_id,
            entitlement_id=ent.id,
            from_status=ent.status,
            to_status=ent.status,
            at=at,
            recorded_at=now,
            reason=reason,
            job_run_id=job_run_id,
        )
    )


__all__ = ["FinaliseBatch", "RolloverStore"]
