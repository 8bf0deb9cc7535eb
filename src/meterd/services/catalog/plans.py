"""Plans: templates of a grant (feature, quantity, term, grace, renewal) that
entitlements are created from."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from meterd.core.domain import FEATURE_KEY_PATTERN, Aggregation, BillingType, ContractMode
from meterd.core.plans import TermUnit, condition_family, term_end, term_kind
from meterd.services import values
from meterd.services.catalog.base import CatalogError, check_grant
from meterd.services.catalog.entitlements import Entitlements
from meterd.services.catalog.rules import (
    NewEntitlement,
    check_from_plan,
    check_rollover,
    check_term,
)
from meterd.storage.features import FeatureStore
from meterd.storage.models import Plan
from meterd.storage.plans import PlanStore


@dataclass(frozen=True, slots=True)
class NewPlan:
    org: str
    key: str
    feature: str
    quantity: Decimal | None
    display_name: str = ""
    description: str = ""
    billing_type: BillingType = BillingType.PRE_PAID
    contract_mode: ContractMode = ContractMode.PRODUCTION
    term_value: int | None = None
    term_unit: TermUnit | None = None
    grace_days: int = 0
    auto_renew: bool = False
    renewal_quantity: Decimal | None = None
    families: tuple[str, ...] = ()
    #: Rollover of the entitlements made from it (``rules.check_rollover``).
    rollover_max: Decimal | None = None
    rollover_min: Decimal | None = None


class Plans:
    def __init__(
        self, plans: PlanStore, features: FeatureStore, entitlements: Entitlements
    ) -> None:
        self.plans = plans
        self.features = features
        self.entitlements = entitlements

    def create_plan(self, spec: NewPlan, now: datetime) -> values.Plan:
        _check(spec)
        feature = self.features.by_key(spec.org, spec.feature)
        check_grant(
            feature,
            quantity=spec.quantity,
            renewal_quantity=spec.renewal_quantity,
            rollover_max=spec.rollover_max,
            rollover_min=spec.rollover_min,
        )
        check_rollover(
            spec.rollover_max,
            spec.rollover_min,
            renews=spec.auto_renew,
            aggregation=Aggregation(feature.aggregation),
        )
        for key in spec.families:
            if not FEATURE_KEY_PATTERN.match(key):
                raise CatalogError("plan family keys must be 1-64 characters of A-Z a-z 0-9 _ . -")
        plan = Plan(
            org_id=spec.org,
            key=spec.key,
            display_name=spec.display_name or spec.key,
            description=spec.description,
            feature_id=feature.id,
            quantity=spec.quantity,
            billing_type=spec.billing_type.value,
            contract_mode=spec.contract_mode.value,
            term_value=spec.term_value,
            term_unit=spec.term_unit.value if spec.term_unit else None,
            term_kind=int(term_kind(spec.term_unit, spec.auto_renew, spec.contract_mode)),
            condition_family=int(
                condition_family(spec.quantity, spec.billing_type, spec.contract_mode)
            ),
            grace_days=spec.grace_days,
            auto_renew=spec.auto_renew,
            renewal_quantity=spec.renewal_quantity,
            rollover_max=spec.rollover_max,
            rollover_min=spec.rollover_min,
            is_active=True,
            row_version=1,
            created_at=now,
            updated_at=now,
        )
        return values.Plan.from_row(self.plans.add(plan, spec.families))

    def plan(self, org: str, plan_id: uuid.UUID) -> values.Plan:
        return values.Plan.from_row(self.plans.get(org, plan_id))

    def plans_of(self, org: str) -> list[values.Plan]:
        return [values.Plan.from_row(row) for row in self.plans.all_of(org)]

    def change_plan(
        self, org: str, plan_id: uuid.UUID, expected_version: int, changes: dict[str, Any]
    ) -> values.Plan:
        """Display fields and ``is_active`` (a retired plan makes no new entitlements),
        if the plan is still at ``expected_version``."""
        if not changes:
            raise CatalogError("nothing to change")
        return values.Plan.from_row(self.plans.update(org, plan_id, expected_version, changes))

    def entitlement_from_plan(
        self,
        org: str,
        plan_id: uuid.UUID,
        customer_id: str,
        starts_at: datetime,
        now: datetime,
        *,
        contract_id: str | None = None,
        priority: int = 0,
        filters: Mapping[str, Any] | None = None,
        given: Iterable[str] = (),
    ) -> values.Entitlement:
        """An entitlement with the plan's feature, quantity, term, grace and renewal
        (plans carry no dimensions: ``filters`` gives the entitlement's, if any).
        ``given``: what the edge was given that the plan gives (``rules.FROM_PLAN``,
        by the edge's names): anything there is refused, never ignored."""
        check_from_plan(given)
        plan = self.plans.get(org, plan_id)
        if not plan.is_active:
            raise CatalogError(f"plan {plan.key} is retired: no new entitlements from it")
        unit = TermUnit(plan.term_unit) if plan.term_unit else None
        return self.entitlements.create_entitlement(
            NewEntitlement(
                org=org,
                customer_id=customer_id,
                feature=self.plans.feature_key(plan),
                quantity=plan.quantity,
                starts_at=starts_at,
                ends_at=term_end(starts_at, plan.term_value, unit),
                billing_type=BillingType(plan.billing_type),
                contract_mode=ContractMode(plan.contract_mode),
                priority=priority,
                grace=timedelta(days=plan.grace_days) if plan.grace_days else None,
                auto_renew=plan.auto_renew,
                renewal_quantity=plan.renewal_quantity,
                rollover_max=plan.rollover_max,
                rollover_min=plan.rollover_min,
                contract_id=contract_id,
                plan_id=plan.id,
                filters=filters,
            ),
            now,
        )


def _check(spec: NewPlan) -> None:
    """Refuse a plan whose own fields cannot make entitlements."""
    if spec.quantity is not None and spec.quantity < 0:
        raise CatalogError("quantity must not be negative")
    if (spec.term_value is None) != (spec.term_unit is None):
        raise CatalogError("give term_value and term_unit together (or neither)")
    if spec.term_value is not None and spec.term_value <= 0:
        raise CatalogError("term_value must be positive")
    check_term(spec.term_value, spec.term_unit)
    if spec.auto_renew and spec.term_unit is None:
        raise CatalogError("an auto-renewing plan needs a term")
    if spec.auto_renew and spec.billing_type is BillingType.PAY_PER_USE:
        raise CatalogError("a PAY_PER_USE plan counts per calendar month and cannot auto-renew")
    if not FEATURE_KEY_PATTERN.match(spec.key):
        raise CatalogError("plan key must be 1-64 characters of A-Z a-z 0-9 _ . -")
