"""Native catalog routes: features and plans of the caller's org."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from meterd.api.auth import RuntimeDep, require
from meterd.api.inputs import MAX_TERM_YEARS, QuantityText
from meterd.domain import (
    FEATURE_KEY_PATTERN,
    NO_NUL_PATTERN,
    BillingType,
    ContractMode,
    FeatureType,
)
from meterd.errors import InvalidError
from meterd.plans import TermUnit
from meterd.quantity import format_optional_quantity
from meterd.services.api_keys import Permission, Principal
from meterd.services.catalog import NewPlan
from meterd.services.records import Feature, Plan
from meterd.timeutil import isoformat, utcnow

router = APIRouter(prefix="/v1", tags=["catalog"])

Viewer = Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_VIEW))]
Manager = Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_MANAGE))]
Key = Annotated[str, Field(pattern=FEATURE_KEY_PATTERN.pattern)]


class FeatureIn(BaseModel):
    key: Key
    name: str | None = Field(default=None, max_length=200, pattern=NO_NUL_PATTERN)
    description: str = Field(default="", max_length=2000, pattern=NO_NUL_PATTERN)
    type: FeatureType = FeatureType.FEATURE
    units: str = Field(default="", max_length=64, pattern=NO_NUL_PATTERN)
    product_id: uuid.UUID | None = None


class FeatureOut(BaseModel):
    id: uuid.UUID
    key: str
    name: str
    description: str
    type: FeatureType
    units: str
    product_id: uuid.UUID | None
    is_active: bool
    created_at: str


def feature_out(feature: Feature) -> FeatureOut:
    return FeatureOut(
        id=feature.id,
        key=feature.key,
        name=feature.name,
        description=feature.description,
        type=FeatureType(feature.type),
        units=feature.units,
        product_id=feature.product_id,
        is_active=feature.is_active,
        created_at=isoformat(feature.created_at),
    )


@router.post("/features", status_code=201, response_model=FeatureOut)
def create_feature(body: FeatureIn, runtime: RuntimeDep, caller: Manager) -> FeatureOut:
    feature = runtime.catalog.create_feature(
        caller.org,
        body.key,
        now=utcnow(),
        name=body.name,
        type=body.type,
        units=body.units,
        description=body.description,
        product_id=body.product_id,
    )
    return feature_out(feature)


@router.get("/features", response_model=list[FeatureOut])
def list_features(runtime: RuntimeDep, caller: Viewer) -> list[FeatureOut]:
    return [feature_out(f) for f in runtime.catalog.features_of(caller.org)]


@router.get("/features/{key}", response_model=FeatureOut)
def get_feature(key: Key, runtime: RuntimeDep, caller: Viewer) -> FeatureOut:
    return feature_out(runtime.catalog.feature(caller.org, key))


class FeaturePatch(BaseModel):
    """Fields left out stay as they are. ``is_active: false`` retires a feature (its
    entitlements and history stay; there is no hard delete)."""

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NO_NUL_PATTERN)
    description: str | None = Field(default=None, max_length=2000, pattern=NO_NUL_PATTERN)
    units: str | None = Field(default=None, max_length=64, pattern=NO_NUL_PATTERN)
    is_active: bool | None = None


@router.patch("/features/{key}", response_model=FeatureOut)
def change_feature(
    key: Key, body: FeaturePatch, runtime: RuntimeDep, caller: Manager
) -> FeatureOut:
    values = body.model_dump(exclude_none=True)
    return feature_out(runtime.catalog.change_feature(caller.org, key, values))


class PlanIn(BaseModel):
    key: Key
    feature: Key
    quantity: QuantityText | None = Field(default=None, description="null: unlimited")
    display_name: str = Field(default="", max_length=200, pattern=NO_NUL_PATTERN)
    description: str = Field(default="", max_length=2000, pattern=NO_NUL_PATTERN)
    billing_type: BillingType = BillingType.PRE_PAID
    contract_mode: ContractMode = ContractMode.PRODUCTION
    term_value: int | None = Field(default=None, ge=1, le=10_000)
    term_unit: TermUnit | None = None
    grace_days: int = Field(default=0, ge=0, le=3650)
    auto_renew: bool = False
    renewal_quantity: QuantityText | None = None
    families: list[Key] = Field(default_factory=list, max_length=50)


class PlanFamilyOut(BaseModel):
    id: uuid.UUID
    key: str
    display_name: str


class PlanOut(BaseModel):
    id: uuid.UUID
    key: str
    display_name: str
    description: str
    feature_id: uuid.UUID
    quantity: str | None
    billing_type: BillingType
    contract_mode: ContractMode
    term_value: int | None
    term_unit: TermUnit | None
    term_kind: int
    condition_family: int
    grace_days: int
    auto_renew: bool
    renewal_quantity: str | None
    families: list[PlanFamilyOut]
    is_active: bool
    row_version: int
    created_at: str


def plan_out(plan: Plan) -> PlanOut:
    return PlanOut(
        id=plan.id,
        key=plan.key,
        display_name=plan.display_name,
        description=plan.description,
        feature_id=plan.feature_id,
        quantity=format_optional_quantity(plan.quantity),
        billing_type=BillingType(plan.billing_type),
        contract_mode=ContractMode(plan.contract_mode),
        term_value=plan.term_value,
        term_unit=TermUnit(plan.term_unit) if plan.term_unit else None,
        term_kind=plan.term_kind,
        condition_family=plan.condition_family,
        grace_days=plan.grace_days,
        auto_renew=plan.auto_renew,
        renewal_quantity=format_optional_quantity(plan.renewal_quantity),
        families=[
            PlanFamilyOut(id=f.id, key=f.key, display_name=f.display_name) for f in plan.families
        ],
        is_active=plan.is_active,
        row_version=plan.row_version,
        created_at=isoformat(plan.created_at),
    )


@router.post("/plans", status_code=201, response_model=PlanOut)
def create_plan(body: PlanIn, runtime: RuntimeDep, caller: Manager) -> PlanOut:
    if body.term_unit is TermUnit.YEAR and (body.term_value or 0) > MAX_TERM_YEARS:
        raise InvalidError(f"term_value: a term is at most {MAX_TERM_YEARS} years")
    plan = runtime.catalog.create_plan(
        NewPlan(
            org=caller.org,
            key=body.key,
            feature=body.feature,
            quantity=Decimal(body.quantity) if body.quantity is not None else None,
            display_name=body.display_name,
            description=body.description,
            billing_type=body.billing_type,
            contract_mode=body.contract_mode,
            term_value=body.term_value,
            term_unit=body.term_unit,
            grace_days=body.grace_days,
            auto_renew=body.auto_renew,
            renewal_quantity=Decimal(body.renewal_quantity)
            if body.renewal_quantity is not None
            else None,
            families=tuple(body.families),
        ),
        utcnow(),
    )
    return plan_out(plan)


class PlanPatch(BaseModel):
    """Display fields and ``is_active`` (retire a plan: no new entitlements from it).
    Terms are fixed once entitlements exist: make a new plan for new terms."""

    row_version: int
    display_name: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=NO_NUL_PATTERN
    )
    description: str | None = Field(default=None, max_length=2000, pattern=NO_NUL_PATTERN)
    is_active: bool | None = None


@router.patch("/plans/{plan_id}", response_model=PlanOut)
def change_plan(
    plan_id: uuid.UUID, body: PlanPatch, runtime: RuntimeDep, caller: Manager
) -> PlanOut:
    values = body.model_dump(exclude_none=True, exclude={"row_version"})
    return plan_out(runtime.catalog.change_plan(caller.org, plan_id, body.row_version, values))


@router.get("/plans", response_model=list[PlanOut])
def list_plans(runtime: RuntimeDep, caller: Viewer) -> list[PlanOut]:
    return [plan_out(p) for p in runtime.catalog.plans_of(caller.org)]


@router.get("/plans/{plan_id}", response_model=PlanOut)
def get_plan(plan_id: uuid.UUID, runtime: RuntimeDep, caller: Viewer) -> PlanOut:
    return plan_out(runtime.catalog.plan(caller.org, plan_id))
