"""Resolution views: what ingest needs to know of a customer's entitlements for a
feature, read from the database (``storage/resolution.py`` encodes them for Redis).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from meterd.domain import BillingType, EntitlementView, Period, Status
from meterd.quantity import to_micros
from meterd.redis_keys import period_field
from meterd.storage.models import Entitlement, Feature, UsagePeriod

CustomerFeature = tuple[str, str, str]  # (org, customer, feature key)
#: The views of a customer and feature, and the flushed micro-units of their periods.
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
            periods = _periods_of(s, [ent.id for ent, _ in rows])
        for ent, feature_key in rows:
            own = periods.get(ent.id, [])
            views, flushed = result[(ent.org_id, ent.customer_id, feature_key)]
            views.append(entitlement_view(ent, own))
            for period in own:
                if period.consumed:
                    flushed[period_field(ent.id, period.period_start)] = to_micros(period.consumed)
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
    )
    asked = set(wanted)
    rows = []
    for org, keys_of_org in by_org.items():
        # One index range per org on (org_id, customer_id, ...); a row-value IN over
        # thousands of tuples is planned far worse by PostgreSQL. Plain columns, not
        # ORM objects: this runs for every customer a lifecycle batch touches.
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
            (row, row.key) for row in candidates if (row.org_id, row.customer_id, row.key) in asked
        ]
    return rows


def _periods_of(s: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    periods: dict[uuid.UUID, list[Any]] = {}
    if ids:
        for period in s.execute(
            select(*_PERIOD_COLUMNS).where(UsagePeriod.entitlement_id.in_(ids))
        ):
            periods.setdefault(period.entitlement_id, []).append(period)
    return periods


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
