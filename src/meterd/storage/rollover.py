"""Storing the carries that became final (issue 23 item 1; ``meterd.core.rollover``).

A renewed term's carry is a function of the consumption of the terms before it,
and late events change those until the late window is over. Once the term
before a period ended at or before ``before`` (the caller passes the instant
before which nothing is left to count: the late window and the flush lag behind
now, ``BalanceService.unflushed_since``), its consumption is final, and so is
the period's carry: ``finalise`` stores it in ``usage_periods.rolled_over``.
The walk (``lifecycle.limit_units``, ingest's ``rolled_limit``) stops at a stored
carry, so storing them bounds it; the figure is the one the walk computes from the
same consumptions, so storing it changes no limit. A period that carries nothing
(not a renewed term, or the entitlement does not roll over) stores 0. Racing
callers compute the same figure from the same final data.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.domain import Period
from meterd.core.lifecycle import limit_units, renews_at
from meterd.core.quantity import from_units, to_units
from meterd.storage.models import Entitlement, Feature, UsagePeriod
from meterd.storage.resolution_views import entitlement_view


class RolloverStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def finalise(self, before: datetime, *, limit: int = 1000) -> int:
        """Store the carry of every period of an entitlement with rollover settings
        that starts after the entitlement does and at or before ``before`` (so the
        term before it ended by then), at most ``limit`` entitlements a call (call
        again while it returns ``limit``). Returns how many entitlements it did."""
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
                    .limit(limit)
                )
            )
            for ent_id in ids:
                _finalise_one(s, ent_id, before)
        return len(ids)


def _finalise_one(s: Session, ent_id: uuid.UUID, before: datetime) -> None:
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

    for i, row in enumerate(rows):
        if row.rolled_over is not None or row.period_start > before:
            continue
        if row.period_start <= ent.starts_at:
            continue
        period = view.periods[i]
        carry = 0
        if period.quantity is not None and renews_at(view, period.start):
            carry = limit_units(view, period, consumed_of) - to_units(period.quantity, scale)
        row.rolled_over = from_units(carry, scale)
        # the walks of the periods after it stop here now
        periods = list(view.periods)
        periods[i] = replace(period, rolled_over=row.rolled_over)
        view = replace(view, periods=tuple(periods))


__all__ = ["RolloverStore"]
