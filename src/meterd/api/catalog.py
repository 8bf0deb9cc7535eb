"""Native catalog routes: features and plans of the caller's org."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr

from meterd.api.auth import RuntimeDep, require
from meterd.api.exact_json import ExactJSONRoute
from meterd.api.inputs import MAX_TERM_YEARS, Dimensions, QuantityText, RequestBody, quantity_of
from meterd.core.domain import (
    FEATURE_KEY_PATTERN,
    NO_NUL_PATTERN,
    Aggregation,
    BillingType,
    ContractMode,
    FeatureType,
)
from meterd.core.errors import InvalidError
from meterd.core.plans import TermUnit
from meterd.core.quantity import format_optional_quantity
from meterd.core.timeutil import isoformat, utcnow
from meterd.services.api_keys import Permission, Principal
from meterd.services.catalog import METER_FIELDS, NewPlan
from meterd.services.values import Feature, Plan

router = APIRouter(prefix="/v1", tags=["catalog"], route_class=ExactJSONRoute)

Viewer = Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_VIEW))]
Manager = Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_MANAGE))]
Key = Annotated[str, Field(pattern=FEATURE_KEY_PATTERN.pattern)]


class FeatureIn(RequestBody):
    key: Key
    name: str | None = Field(default=None, max_length=200, pattern=NO_NUL_PATTERN)
    description: str = Field(default="", max_length=2000, pattern=NO_NUL_PATTERN)
    type: FeatureType = FeatureType.FEATURE
    units: str = Field(default="", max_length=64, pattern=NO_NUL_PATTERN)
    product_id: uuid.UUID | None = None
    scale: StrictInt = Field(
        default=6,
        description="fractional digits counted, 0-6 (a counter holds integers of"
        " 10^-scale units); fixed at creation",
    )
    aggregation: Aggregation = Field(
        default=Aggregation.SUM, description="how events make consumption; fixed at creation"
    )
    event_type: str | None = Field(
        default=None,
        max_length=128,
        description="the CloudEvents type of the raw events metered (null: meterd.usage"
        " events naming the feature); fixed at creation",
    )
    value_property: str | None = Field(
        default=None,
        max_length=200,
        description="the data property (dotted path, e.g. usage.input_tokens) holding the"
        " value; fixed at creation",
    )
    meter_filters: Dimensions | None = Field(
        default=None, description="raw events counted only with these data values"
    )


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
    scale: int = Field(description="fractional digits counted (0-6)")
    aggregation: Aggregation
    event_type: str | None = Field(description="null: meterd.usage events naming the feature")
    value_property: str | None = Field(description="dotted path into data")
    meter_filters: dict[str, StrictStr | StrictInt | StrictBool] | None


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
        scale=feature.scale,
        aggregation=Aggregation(feature.aggregation),
        event_type=feature.event_type,
        value_property=feature.value_property,
        meter_filters=feature.meter_filters or None,
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
        scale=body.scale,
        aggregation=body.aggregation,
        event_type=body.event_type,
        value_property=body.value_property,
        meter_filters=body.meter_filters,
    )
    return feature_out(feature)


@router.get("/features", response_model=list[FeatureOut])
def list_features(runtime: RuntimeDep, caller: Viewer) -> list[FeatureOut]:
    return [feature_out(f) for f in runtime.catalog.features_of(caller.org)]


@router.get("/features/{key}", response_model=FeatureOut)
def get_feature(key: Key, runtime: RuntimeDep, caller: Viewer) -> FeatureOut:
    return feature_out(runtime.catalog.feature(caller.org, key))


_FIXED = "fixed at creation: a value other than the stored one is refused"


class FeaturePatch(RequestBody):
    """Fields left out stay as they are. ``is_active: false`` retires a feature (its
    entitlements and history stay; there is no hard delete)."""

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NO_NUL_PATTERN)
    description: str | None = Field(default=None, max_length=2000, pattern=NO_NUL_PATTERN)
    units: str | None = Field(default=None, max_length=64, pattern=NO_NUL_PATTERN)
    is_active: bool | None = None
    scale: StrictInt | None = Field(default=None, description=_FIXED)
    aggregation: Aggregation | None = Field(default=None, description=_FIXED)
    event_type: str | None = Field(default=None, max_length=128, description=_FIXED)
    value_property: str | None = Field(default=None, max_length=200, description=_FIXED)
    meter_filters: Dimensions | None = Field(default=None, description=_FIXED)


@router.patch("/features/{key}", response_model=FeatureOut)
def change_feature(
    key: Key, body: FeaturePatch, runtime: RuntimeDep, caller: Manager
) -> FeatureOut:
    """How the feature is metered (scale, aggregation, event_type, value_property,
    meter_filters) is fixed: a value other than the stored one is refused (400)."""
    values = body.model_dump(exclude_none=True, exclude=set(METER_FIELDS))
    values |= {name: getattr(body, name) for name in METER_FIELDS if name in body.model_fields_set}
    return feature_out(runtime.catalog.change_feature(caller.org, key, values))


class PlanIn(RequestBody):
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
    rollover_max: QuantityText | None = Field(
        default=None,
        description="a renewed term carries MIN(rollover_max, MAX(remaining of the term"
        " before, rollover_min)); needs auto_renew and a SUM or COUNT feature",
    )
    rollover_min: QuantityText | None = Field(default=None, description="default 0")


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
    rollover_max: str | None
    rollover_min: str | None
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
        rollover_max=format_optional_quantity(plan.rollover_max),
        rollover_min=format_optional_quantity(plan.rollover_min),
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
            quantity=quantity_of(body.quantity),
            display_name=body.display_name,
            description=body.description,
            billing_type=body.billing_type,
            contract_mode=body.contract_mode,
            term_value=body.term_value,
            term_unit=body.term_unit,
            grace_days=body.grace_days,
            auto_renew=body.auto_renew,
            renewal_quantity=quantity_of(body.renewal_quantity),
            families=tuple(body.families),
            rollover_max=quantity_of(body.rollover_max),
            rollover_min=quantity_of(body.rollover_min),
        ),
        utcnow(),
    )
    return plan_out(plan)


class PlanPatch(RequestBody):
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
