"""Resolution views: what ingest needs to know of a customer's entitlements for a
feature, read from the database (``storage/resolution.py`` encodes them for Redis).

A view carries everything the state at an instant depends on
(``meterd.core.lifecycle.status_at``): dates, term and renewal, and the operator's
suspensions and termination from the audit trail, and the alert rules that apply
to it (``storage/alert_rules.py``), and what its live children hold
(``storage/allotments.py``: shown by the value read). Periods that ended before
the late window are left out (late events older than it are refused anyway),
but the last one is always kept: grace counts on it, and a renewing
entitlement's next term starts where it ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from meterd.core.domain import BillingType, EntitlementView, Period, Renewal, Status, Suspension
from meterd.core.lifecycle import renews, renews_at
from meterd.core.quantity import to_units
from meterd.core.redis_keys import period_field
from meterd.core.terms import Term
from meterd.storage.alert_rules import applicable, live_rules_of
from meterd.storage.allotments import allotted_by_parent
from meterd.storage.models import Entitlement, EntitlementTransition, Feature, UsagePeriod

CustomerFeature = tuple[str, str, str]  # (org, customer, feature key)
#: The views of a customer and feature, and the flushed units of their periods.
ResolutionView = tuple[list[EntitlementView], dict[str, int]]


class ResolutionViewStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def views(
        self, keys: Iterable[CustomerFeature], *, usable_after: datetime
    ) -> dict[CustomerFeature, ResolutionView]:
        """For each (org, customer, feature key): the entitlements usage could still
        land on (not terminated, usable window not closed before ``usable_after``),
        and the flushed consumption of their periods (field -> micro-units)."""
        wanted = list(dict.fromkeys(keys))
        result: dict[CustomerFeature, ResolutionView] = {k: ([], {}) for k in wanted}
        if not wanted:
            return result
        with self.sessions() as s:
            rows = _candidates(s, wanted, usable_after)
            ids = [ent.id for ent, _ in rows]
            whole = [ent.id for ent, _ in rows if _rolls_over(ent)]
            periods = _periods_of(s, ids, usable_after, whole)
            suspensions = suspensions_of(s, ids)
            # read with the entitlements: a rule change rewrites the entries after
            # it commits (services/alert_rules.py), as an entitlement change does
            rules = live_rules_of(s, {ent.org_id for ent, _ in rows})
            # for the value read (answered from Redis): a carve, and a child's
            # termination, rewrite the parent's entry after they commit
            allotted = allotted_by_parent(s, ids)
        for ent, feature_key in rows:
            own = _recent(periods.get(ent.id, []), usable_after, ent)
            views, flushed = result[(ent.org_id, ent.customer_id, feature_key)]
            view = entitlement_view(ent, own, suspensions.get(ent.id, ()))
            extra: dict[str, Any] = {}
            alert_rules = applicable(
                rules.get(ent.org_id), ent.id, ent.customer_id, feature_key, view.scale
            )
            if alert_rules is not None:
                extra["alert_rules"] = alert_rules
            if ent.id in allotted:
                extra["allotted"] = allotted[ent.id]
            views.append(replace(view, **extra) if extra else view)
            for period in own:
                if period.consumed:
                    field = period_field(ent.id, period.period_start)
                    flushed[field] = to_units(period.consumed, ent.scale)
        return result


def _candidates(
    s: Session, wanted: Sequence[CustomerFeature], usable_after: datetime
) -> list[tuple[Any, str]]:
    by_org: dict[str, list[CustomerFeature]] = {}
    for key in wanted:
        by_org.setdefault(key[0], []).append(key)
    usable = or_(
        func.coalesce(Entitlement.grace_until, Entitlement.ends_at).is_(None),
        func.coalesce(Entitlement.grace_until, Entitlement.ends_at) > usable_after,
        # A renewing entitlement never ends (its stored end may lag the calendar).
        and_(Entitlement.auto_renew.is_(True), Entitlement.term_anchor.is_not(None)),
    )
    # Usage timed before a termination still counts, within the late window.
    not_gone = or_(
        Entitlement.status != Status.TERMINATED.value,
        Entitlement.terminated_at > usable_after,
    )
    asked = set(wanted)
    rows = []
    for org, keys_of_org in by_org.items():
        # One index range per org on (org_id, customer_id, ...); a row-value IN over
        # thousands of tuples is planned far worse by PostgreSQL. Plain columns, not
        # ORM objects: this runs for every customer a lifecycle batch touches.
        candidates = s.execute(
            select(*VIEW_COLUMNS, Feature.key, Feature.scale)
            .join(Feature, Feature.id == Entitlement.feature_id)
            .where(
                Entitlement.org_id == org,
                Entitlement.customer_id.in_({k[1] for k in keys_of_org}),
                Feature.key.in_({k[2] for k in keys_of_org}),
                not_gone,
                usable,
            )
        ).all()
        rows += [
            (row, row.key) for row in candidates if (row.org_id, row.customer_id, row.key) in asked
        ]
    return rows


def _recent(periods: list[Any], usable_after: datetime, ent: Any = None) -> list[Any]:
    """The periods usage at or after ``usable_after`` can land in, and the last one;
    for an entitlement that rolls over (``ent``), also those before them back to one
    whose limit is final, so the limits the walk computes from the consumptions
    (``lifecycle.limit_units``, ingest's ``rolled_limit``) have every term they read."""
    if not periods:
        return periods
    last = max(periods, key=lambda p: p.period_start)
    kept = [p for p in periods if p is last or p.period_end is None or p.period_end > usable_after]
    if ent is None or not _rolls_over(ent):
        return kept
    view = entitlement_view(ent, (), scale=0)
    earliest = min(p.period_start for p in kept)
    final = [
        p.period_start
        for p in periods
        if p.period_start <= earliest
        and (p.rolled_over is not None or p.quantity is None or not renews_at(view, p.period_start))
    ]
    since = max(final, default=min(p.period_start for p in periods))
    return [p for p in periods if p.period_start >= since]


def _rolls_over(ent: Any) -> bool:
    renewal = renewal_of(ent)
    return renewal is not None and renewal.rolls_over


def suspensions_of(s: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[Suspension, ...]]:
    """Each entitlement's suspensions, from the audit trail: a step to SUSPENDED opens
    one, the step out of it closes it (an open one: still suspended)."""
    found: dict[uuid.UUID, list[Suspension]] = {}
    if not ids:
        return {}
    suspended = Status.SUSPENDED.value
    steps = s.execute(
        select(
            EntitlementTransition.entitlement_id,
            EntitlementTransition.from_status,
            EntitlementTransition.to_status,
            EntitlementTransition.at,
        )
        .where(
            EntitlementTransition.entitlement_id.in_(ids),
            or_(
                EntitlementTransition.to_status == suspended,
                EntitlementTransition.from_status == suspended,
            ),
        )
        .order_by(EntitlementTransition.entitlement_id, EntitlementTransition.at)
    )
    for ent_id, _, to_status, at in steps:
        own = found.setdefault(ent_id, [])
        if to_status == suspended:
            own.append((at, None))
        elif own and own[-1][1] is None:
            own[-1] = (own[-1][0], at)
    return {ent_id: tuple(spans) for ent_id, spans in found.items()}


def _periods_of(
    s: Session,
    ids: Sequence[uuid.UUID],
    usable_after: datetime,
    whole: Sequence[uuid.UUID] = (),
) -> dict[uuid.UUID, list[Any]]:
    """The periods ``_recent`` keeps, read as such: those ending after
    ``usable_after`` and each entitlement's last (an index lookup on
    ``(entitlement_id, period_start)``), not its whole history (a renewing hourly
    grant stores 8,760 periods a year). ``whole``: entitlements that roll over, read
    with all their periods (``_recent`` keeps those back to a final limit)."""
    periods: dict[uuid.UUID, list[Any]] = {}
    if ids:
        later = aliased(UsagePeriod)
        last_start = (
            select(func.max(later.period_start))
            .where(later.entitlement_id == UsagePeriod.entitlement_id)
            .scalar_subquery()
        )
        stmt = select(*_PERIOD_COLUMNS).where(
            UsagePeriod.entitlement_id.in_(ids),
            or_(
                UsagePeriod.period_end.is_(None),
                UsagePeriod.period_end > usable_after,
                UsagePeriod.period_start == last_start,
                UsagePeriod.entitlement_id.in_(whole),
            ),
        )
        for period in s.execute(stmt):
            periods.setdefault(period.entitlement_id, []).append(period)
    return periods


#: The entitlement columns an ``EntitlementView`` is built from (the backfill reads
#: the same ones).
VIEW_COLUMNS = (
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
    Entitlement.auto_renew,
    Entitlement.contract_mode,
    Entitlement.renewal_quantity,
    Entitlement.term_months,
    Entitlement.term_micros,
    Entitlement.term_anchor,
    Entitlement.terminated_at,
    Entitlement.filters,
    Entitlement.rollover_max,
    Entitlement.rollover_min,
)
_PERIOD_COLUMNS = (
    UsagePeriod.entitlement_id,
    UsagePeriod.period_start,
    UsagePeriod.period_end,
    UsagePeriod.quantity,
    UsagePeriod.consumed,
    UsagePeriod.rolled_over,
)


def renewal_of(ent: Any) -> Renewal | None:
    """How an entitlement (an ORM row, or a row with the term columns) renews, or None
    if it does not: not auto-renewing, a trial, pay-per-use, or without a term."""
    if not renews(ent.auto_renew, ent.contract_mode) or ent.term_anchor is None:
        return None
    if ent.billing_type == BillingType.PAY_PER_USE.value:
        return None
    if ent.term_months:
        term = Term(months=ent.term_months)
    elif ent.term_micros:
        term = Term(length=timedelta(microseconds=ent.term_micros))
    else:
        return None
    quantity = ent.renewal_quantity if ent.renewal_quantity is not None else ent.quantity
    # rows read without the rollover columns (the lifecycle job's) renew without it
    rollover_max = getattr(ent, "rollover_max", None) or Decimal(0)
    rollover_min = getattr(ent, "rollover_min", None) or Decimal(0)
    return Renewal(ent.term_anchor, term, quantity, rollover_max, rollover_min)


def entitlement_view(
    ent: Any,
    periods: Sequence[Any],
    suspensions: tuple[Suspension, ...] = (),
    *,
    scale: int | None = None,
) -> EntitlementView:
    """An EntitlementView from an entitlement (an ORM row, or a row of
    ``VIEW_COLUMNS`` with its feature's ``scale``), its usage periods (rows with
    period_start, period_end, quantity) and its suspensions (``suspensions_of``).
    An ORM row has no scale: pass its feature's."""
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
        periods=tuple(
            Period(p.period_start, p.period_end, p.quantity, getattr(p, "rolled_over", None))
            for p in periods
        ),
        renewal=renewal_of(ent),
        suspensions=suspensions,
        terminated_at=ent.terminated_at,
        scale=ent.scale if scale is None else scale,
        filters=ent.filters or None,
    )
