"""The seed pages' reads of entitlements (always within one org): a customer's
grants with their features (the Zenskar and tenant pages) and the workspace page.

Built on the generic listing's pieces (``storage/listing.py``: the filterable
columns, the status in SQL, the LIKE pattern), so a filter means the same on a
seed page as on ``GET /v1/entitlements``; nothing here is used by a native route.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.compat_filters import WorkspaceFilters
from meterd.core.filters import Filter
from meterd.storage.listing import apply_filters, columns_at, contains_pattern, status_at
from meterd.storage.models import Entitlement, Feature, Plan, PlanFamily, plan_family_links

#: A row of the workspace page: the entitlement, its feature, its plan (if any) and
#: the plan's families.
WorkspaceRow = tuple[Entitlement, Feature, Plan | None, list[PlanFamily]]


class CompatListing:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def grants_of_customer(
        self,
        org: str,
        customer_id: str,
        filters: Sequence[Filter],
        limit: int,
        now: datetime,
        search: str | None = None,
    ) -> list[tuple[Entitlement, Feature]]:
        """A customer's entitlements with their features (filters on the grants;
        ``search`` on the feature's key, name or description)."""
        stmt: Any = (
            select(Entitlement, Feature)
            .join(Feature, Feature.id == Entitlement.feature_id)
            .where(Entitlement.org_id == org, Entitlement.customer_id == customer_id)
        )
        stmt = apply_filters(stmt, filters, columns_at(now))
        if search:
            pattern = contains_pattern(search)
            stmt = stmt.where(
                or_(
                    Feature.key.ilike(pattern, escape="\\"),
                    Feature.name.ilike(pattern, escape="\\"),
                    Feature.description.ilike(pattern, escape="\\"),
                )
            )
        with self.sessions() as s:
            rows = [
                (row[0], row[1])
                for row in s.execute(stmt.order_by(Entitlement.number).limit(limit))
            ]
            for ent, feature in rows:
                s.expunge(ent)
                if feature in s:
                    s.expunge(feature)
        return rows

    def workspace_page(
        self, org: str, filters: WorkspaceFilters, page: int, size: int, now: datetime
    ) -> tuple[list[WorkspaceRow], int]:
        """One page (1-based, by entitlement number) of the workspace seed listing,
        and the number of rows matching in all."""
        base = (
            select(Entitlement, Feature, Plan)
            .join(Feature, Feature.id == Entitlement.feature_id)
            .outerjoin(
                Plan, and_(Plan.id == Entitlement.plan_id, Plan.org_id == Entitlement.org_id)
            )
            .where(
                Entitlement.org_id == org,
                *_workspace_plan_conditions(filters),
                *_workspace_conditions(filters, now),
            )
        )
        with self.sessions() as s:
            total = int(s.scalar(select(func.count()).select_from(base.subquery())) or 0)
            found = s.execute(
                base.order_by(Entitlement.number).offset((page - 1) * size).limit(size)
            ).all()
            rows: list[WorkspaceRow] = [
                (ent, feature, plan, list(plan.families) if plan is not None else [])
                for ent, feature, plan in found
            ]
            s.expunge_all()
        return rows, total


def _workspace_plan_conditions(f: WorkspaceFilters) -> list[Any]:
    where: list[Any] = []
    if f.plan_id is not None:
        where.append(Entitlement.plan_id == f.plan_id)
    if f.plan_family_ids:
        where.append(
            exists(
                select(plan_family_links.c.plan_id).where(
                    plan_family_links.c.plan_id == Entitlement.plan_id,
                    plan_family_links.c.family_id.in_(f.plan_family_ids),
                )
            )
        )
    if f.condition_family is not None:
        where.append(Plan.condition_family == f.condition_family)
    if f.term_kind is not None:
        where.append(Plan.term_kind == f.term_kind)
    if f.term_value is not None:
        where.append(Plan.term_value == f.term_value)
    if f.term_unit is not None:
        where.append(Plan.term_unit == f.term_unit)
    if f.auto_renew is not None:
        where.append(Plan.auto_renew.is_(f.auto_renew))
    return where


def _workspace_conditions(f: WorkspaceFilters, now: datetime) -> list[Any]:
    where: list[Any] = []
    if f.model_id is not None:
        where.append(Entitlement.feature_id == f.model_id)
    if not f.owner_role_matches or f.status_matches_nothing:
        where.append(Entitlement.id.is_(None))
    if f.owner is not None:
        where.append(Entitlement.customer_id == f.owner)
    if f.status is not None:
        where.append(status_at(now) == f.status)
    bounds = (
        (f.starts_from, Entitlement.starts_at.__ge__),
        (f.starts_to, Entitlement.starts_at.__le__),
        (f.ends_from, Entitlement.ends_at.__ge__),
        (f.ends_to, Entitlement.ends_at.__le__),
    )
    where += [compare(moment) for moment, compare in bounds if moment is not None]
    if f.search is not None:
        pattern = contains_pattern(f.search)
        where.append(
            or_(
                Plan.display_name.ilike(pattern, escape="\\"),
                Feature.name.ilike(pattern, escape="\\"),
                Entitlement.customer_id.ilike(pattern, escape="\\"),
            )
        )
    return where
