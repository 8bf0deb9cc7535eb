"""Filtered, sorted, keyset-paginated reads of entitlements (always within one org).

Filters arrive as ``meterd.core.filters.Filter`` (field names, typed values) and are
mapped to columns through ``ENTITLEMENT_COLUMNS``: nothing from a request ever
becomes SQL text. Pages are keyset pages on (sort column, id), so a page stays
correct while rows are added or removed between requests.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.domain import Status, Suspension
from meterd.core.filters import Filter, Kind, Op
from meterd.core.paging import Cursor
from meterd.storage.exact import exact_sum
from meterd.storage.models import Entitlement, Feature, UsagePeriod
from meterd.storage.resolution_views import suspensions_of

#: Filterable fields of an entitlement: type, and the column it reads.
ENTITLEMENT_COLUMNS: dict[str, tuple[Kind, Any]] = {
    "id": (Kind.UUID, Entitlement.id),
    "number": (Kind.INTEGER, Entitlement.number),
    "customer": (Kind.STRING, Entitlement.customer_id),
    "customer_id": (Kind.STRING, Entitlement.customer_id),
    "feature": (Kind.STRING, Feature.key),
    "entitlement": (Kind.UUID, Entitlement.feature_id),
    "feature_id": (Kind.UUID, Entitlement.feature_id),
    "plan_id": (Kind.UUID, Entitlement.plan_id),
    "contract_id": (Kind.STRING, Entitlement.contract_id),
    "status": (Kind.STRING, Entitlement.status),
    "billing_type": (Kind.STRING, Entitlement.billing_type),
    "contract_mode": (Kind.STRING, Entitlement.contract_mode),
    "quantity": (Kind.DECIMAL, Entitlement.quantity),
    "created_at": (Kind.DATETIME, Entitlement.created_at),
    "starts_at": (Kind.DATETIME, Entitlement.starts_at),
    "active_from": (Kind.DATETIME, Entitlement.starts_at),
    "ends_at": (Kind.DATETIME, Entitlement.ends_at),
    "grace_until": (Kind.DATETIME, Entitlement.grace_until),
    "parent_id": (Kind.UUID, Entitlement.parent_id),
}


def status_at(now: datetime) -> ColumnElement[str]:
    """The status at ``now``, in SQL: ``meterd.core.lifecycle.status_at`` for filtering
    (an operator's suspension or termination is recorded at once; the clock's
    steps are derived from the dates, so a filter never waits for the job)."""
    s = Status
    renewing = and_(
        Entitlement.auto_renew.is_(True),
        Entitlement.contract_mode != "TRIAL",
        Entitlement.term_anchor.is_not(None),
        Entitlement.billing_type == "PRE_PAID",
    )
    return case(
        (Entitlement.status.in_([s.SUSPENDED.value, s.TERMINATED.value]), Entitlement.status),
        (Entitlement.starts_at > now, literal(s.PENDING.value)),
        (renewing, literal(s.ACTIVE.value)),
        (or_(Entitlement.ends_at.is_(None), Entitlement.ends_at > now), literal(s.ACTIVE.value)),
        (Entitlement.grace_until > now, literal(s.GRACE.value)),
        else_=literal(s.EXPIRED.value),
    )


def columns_at(now: datetime) -> dict[str, tuple[Kind, Any]]:
    """The filterable columns, ``status`` judged at ``now``."""
    return {**ENTITLEMENT_COLUMNS, "status": (Kind.STRING, status_at(now))}


#: Flushed consumption over all of an entitlement's periods (``quantity_used``
#: filters read the database: at most one flush interval behind).
QUANTITY_USED = (
    select(
        func.coalesce(
            exact_sum(UsagePeriod.consumed, UsagePeriod.consumed.type),
            literal(Decimal(0), UsagePeriod.consumed.type),
        )
    )
    .where(UsagePeriod.entitlement_id == Entitlement.id)
    .correlate(Entitlement)
    .scalar_subquery()
)

#: Sort keys of the entitlement list (non-null columns: keyset comparisons stay simple).
ENTITLEMENT_SORTS: dict[str, Any] = {
    "number": Entitlement.number,
    "id": Entitlement.id,
    "created_at": Entitlement.created_at,
    "starts_at": Entitlement.starts_at,
    "active_from": Entitlement.starts_at,
    "customer_id": Entitlement.customer_id,
}


def condition(column: Any, f: Filter) -> ColumnElement[bool]:
    if f.op is Op.ISNULL:
        null: ColumnElement[bool] = column.is_(None) if f.value else column.is_not(None)
        return null
    if f.op is Op.IN:
        within: ColumnElement[bool] = column.in_(list(f.value))
        return within
    comparisons = {
        Op.EQ: column.__eq__,
        Op.NEQ: column.__ne__,
        Op.GT: column.__gt__,
        Op.GTE: column.__ge__,
        Op.LT: column.__lt__,
        Op.LTE: column.__le__,
    }
    result: ColumnElement[bool] = comparisons[f.op](f.value)
    if f.op is Op.NEQ:
        result = or_(result, column.is_(None))  # "not equal" includes unset values
    return result


def contains_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own ``%`` and ``_`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def apply_filters(
    stmt: Any, filters: Sequence[Filter], columns: Mapping[str, tuple[Kind, Any]]
) -> Any:
    for f in filters:
        stmt = stmt.where(condition(columns[f.field][1], f))
    return stmt


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Any]
    next: Cursor | None
    previous: Cursor | None
    total: int


def keyset_page(
    s: Session,
    stmt: Any,
    *,
    sort_column: Any,
    id_column: Any,
    sort_name: str,
    descending: bool,
    cursor: Cursor | None,
    limit: int,
    key_of: Any,
) -> Page:
    """One page of ``stmt`` ordered by (sort column, id). ``key_of(row)`` gives the
    row's (sort value, id) for the cursors."""
    total = int(s.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0)
    forward = cursor is None or cursor.forward
    reading_descending = descending if forward else not descending
    if cursor is not None:
        value, row_id = cursor.value, _as_id(cursor.row_id)
        if reading_descending:
            after = or_(sort_column < value, and_(sort_column == value, id_column < row_id))
        else:
            after = or_(sort_column > value, and_(sort_column == value, id_column > row_id))
        stmt = stmt.where(after)
    order = (
        (sort_column.desc(), id_column.desc())
        if reading_descending
        else (sort_column.asc(), id_column.asc())
    )
    rows = list(s.execute(stmt.order_by(*order).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    if not forward:
        rows.reverse()

    def at(row: Any, going_forward: bool) -> Cursor:
        value, row_id = key_of(row)
        return Cursor(sort_name, value, str(row_id), going_forward)

    if forward:
        next_ = at(rows[-1], True) if rows and more else None
        previous = at(rows[0], False) if rows and cursor is not None else None
    else:
        next_ = at(rows[-1], True) if rows else None
        previous = at(rows[0], False) if rows and more else None
    return Page(rows=rows, next=next_, previous=previous, total=total)


def _as_id(raw: str) -> Any:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return raw


class EntitlementListing:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def page(
        self,
        org: str,
        filters: Sequence[Filter],
        *,
        sort: str,
        descending: bool,
        cursor: Cursor | None,
        limit: int,
        now: datetime,
        quantity_used: Sequence[Filter] = (),
        search: str | None = None,
    ) -> Page:
        """Entitlements of ``org`` (rows of (Entitlement, feature key))."""
        stmt: Any = (
            select(Entitlement, Feature.key)
            .join(Feature, Feature.id == Entitlement.feature_id)
            .where(Entitlement.org_id == org)
        )
        stmt = apply_filters(stmt, filters, columns_at(now))
        for f in quantity_used:
            stmt = stmt.where(condition(QUANTITY_USED, f))
        if search:
            pattern = contains_pattern(search)
            stmt = stmt.where(
                or_(
                    Entitlement.customer_id.ilike(pattern, escape="\\"),
                    Feature.key.ilike(pattern, escape="\\"),
                    Entitlement.contract_id.ilike(pattern, escape="\\"),
                )
            )
        column = ENTITLEMENT_SORTS[sort]
        attribute = column.key

        def key_of(row: Any) -> tuple[Any, Any]:
            return getattr(row[0], attribute), row[0].id

        with self.sessions() as s:
            page = keyset_page(
                s,
                stmt,
                sort_column=column,
                id_column=Entitlement.id,
                sort_name=f"{sort}:{'desc' if descending else 'asc'}",
                descending=descending,
                cursor=cursor,
                limit=limit,
                key_of=key_of,
            )
            for row in page.rows:
                s.expunge(row[0])
        return page

    def suspensions_of(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[Suspension, ...]]:
        """Each entitlement's suspensions (from the audit trail)."""
        with self.sessions() as s:
            return suspensions_of(s, ids)

    def feature_scales(self, feature_ids: set[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The scale of each feature (what its counters' units are)."""
        if not feature_ids:
            return {}
        with self.sessions() as s:
            rows = s.execute(
                select(Feature.id, Feature.scale).where(Feature.id.in_(feature_ids))
            ).all()
        return {feature_id: scale for feature_id, scale in rows}

    def periods_of(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[UsagePeriod]]:
        result: dict[uuid.UUID, list[UsagePeriod]] = {i: [] for i in ids}
        if not ids:
            return result
        with self.sessions() as s:
            for period in s.scalars(
                select(UsagePeriod)
                .where(UsagePeriod.entitlement_id.in_(list(ids)))
                .order_by(UsagePeriod.period_start)
            ):
                result[period.entitlement_id].append(period)
        return result
