"""Entitlements with a status step due, as the lifecycle job finds and moves them.

Finding the work (``claim_due``: one index range scan per kind of step), the
chains of steps each one takes (``due_chains``, bounded by the late window and
the batch budget), and moving the rows along them: by compare-and-set on
(status, row_version) one at a time (``move_one``, SQLite) or with one
statement over rows this transaction holds locked (``move_claimed``,
PostgreSQL). ``meterd.storage.transitions`` runs these in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, and_, bindparam, select, text, update
from sqlalchemy.orm import Session

from meterd.core.domain import Status
from meterd.core.lifecycle import Transition, due_transitions, extend_term, next_period_after
from meterd.storage.models import (
    LAPSED_RENEWING_SQL,
    VOID_DUE_SQL,
    Entitlement,
    Feature,
    UtcDateTime,
)
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
    #: A void from this instant (a termination, maybe scheduled ahead).
    terminated_at: datetime | None = None


Chain = tuple[DueEntitlement, list[Transition]]


def claim_due(s: Session, now: datetime, limit: int, *, lock: bool) -> list[DueEntitlement]:
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
        # Voided from an instant that has come (a void scheduled ahead).
        and_(VOID_DUE, Entitlement.terminated_at <= now),
    ]
    rows: dict[uuid.UUID, DueEntitlement] = {}
    for condition in due_conditions:
        stmt = (
            select(*DUE_COLUMNS)
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


def due_chains(
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
            terminated_at=d.terminated_at,
        )
        if chain and caused_at is not None:
            chain = [_not_before(step, caused_at) for step in chain]
        if chain:
            chains.append((d, chain))
    return chains


def within_budget(chains: list[Chain], max_steps: int) -> list[Chain]:
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


def _new_term(due: DueEntitlement, chain: Sequence[Transition]) -> tuple[Any, Any]:
    """(ends_at, grace_until) after the chain's renewals, or (None, None) if none."""
    renewals = [step.renewal_end for step in chain if step.renewal_end is not None]
    if not renewals or due.ends_at is None:
        return None, None
    return extend_term(due.ends_at, due.grace_until, renewals[-1])


def _next_period(due: DueEntitlement, chain: Sequence[Transition]) -> datetime | None:
    """When the next PAY_PER_USE month opens after the chain (never, once terminated)."""
    if chain[-1].to_status is Status.TERMINATED:
        return None
    return next_period_after(list(chain), due.next_period_at)


def move_one(s: Session, due: DueEntitlement, chain: Sequence[Transition], now: datetime) -> bool:
    """Compare-and-set one entitlement along its chain (SQLite)."""
    values: dict[str, Any] = {
        "status": chain[-1].to_status.value,
        "row_version": due.row_version + 1,
        "updated_at": now,
        "next_period_at": _next_period(due, chain),
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


def move_claimed(s: Session, wanted: Sequence[Chain], now: datetime) -> None:
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
                "b_next_period": _next_period(due, chain),
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
DUE_COLUMNS = (
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
    Entitlement.terminated_at,
)
#: Renewing entitlements recorded EXPIRED or GRACE: the partial index's own predicate,
#: word for word, so the planner proves the query matches it and reads only that index.
LAPSED_RENEWING: ColumnElement[bool] = and_(text(LAPSED_RENEWING_SQL))
#: Voided, not recorded TERMINATED yet: the partial index's predicate, word for word.
VOID_DUE: ColumnElement[bool] = and_(text(VOID_DUE_SQL))


def due_of(ent: Entitlement, feature: str) -> DueEntitlement:
    """A DueEntitlement of an ORM row: every field but the feature key has its column."""
    columns = {f.name: getattr(ent, f.name) for f in fields(DueEntitlement) if f.name != "feature"}
    return DueEntitlement(feature=feature, **columns)
