"""Plans and plan families at rest (always within one org)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.errors import DuplicateError, NotFoundError, StaleVersionError
from meterd.storage.models import Feature, Plan, PlanFamily


class PlanStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(self, plan: Plan, family_keys: Sequence[str]) -> Plan:
        """Insert a plan, linking it to the org's families of those keys (created if new)."""
        try:
            with self.sessions.begin() as s:
                existing = {
                    f.key: f
                    for f in s.scalars(
                        select(PlanFamily).where(
                            PlanFamily.org_id == plan.org_id, PlanFamily.key.in_(family_keys)
                        )
                    )
                }
                for order, key in enumerate(dict.fromkeys(family_keys)):
                    family = existing.get(key) or PlanFamily(
                        org_id=plan.org_id, key=key, display_name=key, sort_order=order
                    )
                    plan.families.append(family)
                s.add(plan)
        except IntegrityError:
            raise DuplicateError(f"plan key {plan.key!r} is taken in org {plan.org_id}") from None
        return self.get(plan.org_id, plan.id)

    def get(self, org: str, plan_id: uuid.UUID) -> Plan:
        with self.sessions() as s:
            plan = s.scalars(select(Plan).where(Plan.id == plan_id, Plan.org_id == org)).first()
            if plan is None:
                raise NotFoundError("plan", plan_id)
            s.expunge_all()
            return plan

    def update(
        self, org: str, plan_id: uuid.UUID, expected_version: int, values: dict[str, object]
    ) -> Plan:
        """Change a plan if it is still at ``expected_version``. Existing entitlements
        keep the terms they were created with; new ones take the new terms."""
        with self.sessions.begin() as s:
            plan = s.scalars(select(Plan).where(Plan.id == plan_id, Plan.org_id == org)).first()
            if plan is None:
                raise NotFoundError("plan", plan_id)
            if plan.row_version != expected_version:
                raise StaleVersionError(plan_id, expected_version, plan.row_version)
            for name, value in values.items():
                setattr(plan, name, value)
            plan.row_version += 1
        return self.get(org, plan_id)

    def feature_key(self, plan: Plan) -> str:
        with self.sessions() as s:
            key = s.scalar(select(Feature.key).where(Feature.id == plan.feature_id))
        if key is None:
            raise NotFoundError("feature", plan.feature_id)
        return key

    def all_of(self, org: str) -> list[Plan]:
        with self.sessions() as s:
            plans = list(s.scalars(select(Plan).where(Plan.org_id == org).order_by(Plan.key)))
            s.expunge_all()
            return plans

    def families(self, plan_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[PlanFamily]]:
        result: dict[uuid.UUID, list[PlanFamily]] = {i: [] for i in plan_ids}
        if not plan_ids:
            return result
        with self.sessions() as s:
            for plan in s.scalars(select(Plan).where(Plan.id.in_(list(plan_ids)))):
                result[plan.id] = list(plan.families)
            s.expunge_all()
        return result
