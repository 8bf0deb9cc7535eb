"""Native entitlement routes: list (filters, search, cursor pages), read, create,
change (optimistic concurrency on ``row_version``), suspend/resume/terminate,
periods and transitions. Every query is scoped to the caller's org; an id of
another org is answered exactly like an id that does not exist (404).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr

from meterd.api.auth import RuntimeDep, require
from meterd.api.compat.attributes import TenantAttributes
from meterd.api.exact_json import ExactJSONRoute
from meterd.api.inputs import (
    MAX_PRIORITY,
    Dimensions,
    QuantityText,
    RequestBody,
    moment,
    quantity_of,
)
from meterd.api.openapi import filter_parameters
from meterd.core.domain import (
    CUSTOMER_ID_MAX,
    FEATURE_KEY_PATTERN,
    NO_NUL_PATTERN,
    PRINTABLE_PATTERN,
    Balance,
    BillingType,
    ContractMode,
    EffectiveState,
    Status,
)
from meterd.core.errors import InvalidError
from meterd.core.filters import VALUE_TYPES, Kind, parse_filters
from meterd.core.lifecycle import OperatorAction
from meterd.core.paging import decode, encode
from meterd.core.quantity import format_optional_quantity, format_quantity
from meterd.core.terms import Term, TermUnit
from meterd.core.timeutil import isoformat, isoformat_or_none, utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission, Principal
from meterd.services.catalog import UNSET, EntitlementChange, NewEntitlement
from meterd.services.catalog.rules import FROM_PLAN, check_term
from meterd.services.queries import ENTITLEMENT_FILTERS, ENTITLEMENT_SORT_KEYS
from meterd.services.values import Entitlement

router = APIRouter(prefix="/v1", tags=["entitlements"], route_class=ExactJSONRoute)

Viewer = Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_VIEW))]
Manager = Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_MANAGE))]

LIST_PARAMS = ("cursor", "limit", "sort_key", "sort_type", "search")
#: The list's filterable fields: the entitlement's, and its flushed consumption.
LIST_FILTERS = {**ENTITLEMENT_FILTERS, "quantity_used": Kind.DECIMAL}


class EntitlementOut(BaseModel):
    id: uuid.UUID
    number: int
    customer_id: str
    feature: str
    plan_id: uuid.UUID | None
    contract_id: str | None
    quantity: str | None = Field(description="of the current period; null: unlimited")
    consumed: str = Field(description="in the current period, real time")
    remaining: str | None
    overage: str
    period_start: str
    billing_type: BillingType
    contract_mode: ContractMode
    status: Status = Field(description="at this instant, from the calendar")
    effective_state: EffectiveState
    priority: int
    starts_at: str
    ends_at: str | None = Field(description="of the current term (a renewing one: this term)")
    grace_until: str | None
    issued_at: str
    auto_renew: bool
    renewal_quantity: str | None
    parent_id: uuid.UUID | None
    allotment: str | None
    rollover_max: str | None = Field(
        description="a renewed term carries MIN(rollover_max, MAX(remaining of the term"
        " before, rollover_min)); null: nothing carries"
    )
    rollover_min: str | None
    filters: dict[str, StrictStr | StrictInt | StrictBool] | None = Field(
        description="dimensions: only usage whose data has these values counts on it"
        " (null: all usage of the feature)"
    )
    row_version: int
    created_at: str
    updated_at: str


class EntitlementPage(BaseModel):
    results: list[EntitlementOut]
    next: str | None
    previous: str | None
    total_count: int


def entitlement_out(ent: Entitlement, feature: str, balance: Balance) -> EntitlementOut:
    return EntitlementOut(
        id=ent.id,
        number=ent.number,
        customer_id=ent.customer_id,
        feature=feature,
        plan_id=ent.plan_id,
        contract_id=ent.contract_id,
        quantity=format_optional_quantity(balance.quantity),
        consumed=format_quantity(balance.consumed),
        remaining=format_optional_quantity(balance.remaining),
        overage=format_quantity(balance.overage),
        period_start=isoformat(balance.period_start),
        billing_type=BillingType(ent.billing_type),
        contract_mode=ContractMode(ent.contract_mode),
        status=balance.status,
        effective_state=balance.state,
        priority=ent.priority,
        starts_at=isoformat(ent.starts_at),
        ends_at=isoformat_or_none(balance.ends_at),
        grace_until=isoformat_or_none(balance.grace_until),
        issued_at=isoformat(ent.issued_at),
        auto_renew=ent.auto_renew,
        renewal_quantity=format_optional_quantity(ent.renewal_quantity),
        parent_id=ent.parent_id,
        allotment=format_optional_quantity(ent.allotment),
        rollover_max=format_optional_quantity(ent.rollover_max),
        rollover_min=format_optional_quantity(ent.rollover_min),
        filters=ent.filters or None,
        row_version=ent.row_version,
        created_at=isoformat(ent.created_at),
        updated_at=isoformat(ent.updated_at),
    )


@router.get(
    "/entitlements",
    response_model=EntitlementPage,
    openapi_extra={"parameters": filter_parameters(LIST_FILTERS)},
)
def list_entitlements(
    request: Request,
    runtime: RuntimeDep,
    caller: Viewer,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    sort_key: Annotated[
        str, Query(json_schema_extra={"enum": sorted(ENTITLEMENT_SORT_KEYS)})
    ] = "number",
    sort_type: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
    search: Annotated[str | None, Query(max_length=200, pattern=PRINTABLE_PATTERN)] = None,
) -> EntitlementPage:
    """Filters: every field below with the operators ``__neq``, ``__gt``, ``__gte``,
    ``__lt``, ``__lte``, ``__in`` (comma-separated), ``__isnull``; plus
    ``quantity_used`` (flushed consumption). ``search`` matches customer id,
    feature key or contract id. Pages by opaque ``cursor`` (``next``/``previous``)."""
    if sort_key not in ENTITLEMENT_SORT_KEYS:
        raise InvalidError(f"sort_key must be one of {', '.join(sorted(ENTITLEMENT_SORT_KEYS))}")
    sort = f"{sort_key}:{sort_type}"
    params = list(request.query_params.multi_items())
    filters = parse_filters(params, LIST_FILTERS, reserved=LIST_PARAMS)
    value_type = VALUE_TYPES[ENTITLEMENT_FILTERS[sort_key]]
    page_cursor = decode(cursor, sort, value_type) if cursor else None
    used = [f for f in filters if f.field == "quantity_used"]
    plain = [f for f in filters if f.field != "quantity_used"]
    page = runtime.queries.page(
        caller.org,
        plain,
        sort=sort_key,
        descending=sort_type == "desc",
        cursor=page_cursor,
        limit=limit,
        now=utcnow(),
        quantity_used=used,
        search=search,
    )
    return EntitlementPage(
        results=[entitlement_out(*row) for row in page.rows],
        next=encode(page.next) if page.next else None,
        previous=encode(page.previous) if page.previous else None,
        total_count=page.total,
    )


@router.get("/entitlements/{entitlement_id}", response_model=EntitlementOut)
def get_entitlement(
    entitlement_id: uuid.UUID, runtime: RuntimeDep, caller: Viewer
) -> EntitlementOut:
    return entitlement_out(*runtime.queries.get(caller.org, entitlement_id, utcnow()))


class EntitlementIn(RequestBody):
    """Either ``feature`` (and the terms below), or ``plan_id``: the plan then gives
    feature, quantity, term, grace, renewal, billing type and contract mode, and any
    of those given beside it is a 400 naming them (``rules.FROM_PLAN``)."""

    customer_id: str = Field(min_length=1, max_length=CUSTOMER_ID_MAX, pattern=PRINTABLE_PATTERN)
    feature: str | None = Field(default=None, pattern=FEATURE_KEY_PATTERN.pattern)
    quantity: QuantityText | None = Field(default=None, description="null: unlimited")
    starts_at: datetime | None = Field(default=None, description="default: now")
    ends_at: datetime | None = None
    grace_days: int = Field(default=0, ge=0, le=3650)
    billing_type: BillingType = BillingType.PRE_PAID
    contract_mode: ContractMode = ContractMode.PRODUCTION
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    auto_renew: bool = False
    term_value: int | None = Field(
        default=None, ge=1, le=10_000, description="with term_unit: the term it renews by"
    )
    term_unit: TermUnit | None = Field(
        default=None, description="default: starts_at to ends_at (whole months if it is)"
    )
    renewal_quantity: QuantityText | None = None
    contract_id: str | None = Field(default=None, max_length=128, pattern=PRINTABLE_PATTERN)
    plan_id: uuid.UUID | None = None
    allotment: QuantityText | None = Field(
        default=None, description="what a parent may allot to child customers"
    )
    attributes: TenantAttributes | None = Field(
        default=None,
        description="the tenant page's own fields, under the page's names: shown on"
        " GET /api/web/v4/tenants/{tenantid}/entitlements/{type} only (native reads do"
        " not return them)",
    )
    filters: Dimensions | None = Field(
        default=None,
        description="dimensions: only usage whose data has these values counts on it"
        " (e.g. a limit per model); fixed at creation",
    )
    rollover_max: QuantityText | None = Field(
        default=None,
        description="a renewed term carries MIN(rollover_max, MAX(remaining of the term"
        " before, rollover_min)) on top of its renewal quantity; needs auto_renew and a"
        " SUM or COUNT feature; fixed at creation",
    )
    rollover_min: QuantityText | None = Field(
        default=None, description="default 0: carried even when less remained (or overage)"
    )


@router.post("/entitlements", status_code=201, response_model=EntitlementOut)
def create_entitlement(body: EntitlementIn, runtime: RuntimeDep, caller: Manager) -> EntitlementOut:
    now = utcnow()
    starts_at = moment(body.starts_at, "starts_at") or now
    if body.plan_id is not None:
        if body.allotment is not None or body.attributes is not None:
            raise InvalidError(
                "allotment and attributes are not taken with a plan_id: "
                "PATCH them onto the new entitlement"
            )
        from_plan = runtime.catalog.entitlement_from_plan(
            caller.org,
            body.plan_id,
            body.customer_id,
            starts_at,
            now,
            contract_id=body.contract_id,
            priority=body.priority,
            filters=body.filters,
            given=[name for name in FROM_PLAN if name in body.model_fields_set],
        )
        return get_entitlement(from_plan.id, runtime, caller)
    if body.feature is None:
        raise InvalidError("give a feature, or a plan_id")
    ent = runtime.catalog.create_entitlement(
        NewEntitlement(
            org=caller.org,
            customer_id=body.customer_id,
            feature=body.feature,
            quantity=quantity_of(body.quantity),
            starts_at=starts_at,
            ends_at=moment(body.ends_at, "ends_at"),
            billing_type=body.billing_type,
            contract_mode=body.contract_mode,
            priority=body.priority,
            grace=timedelta(days=body.grace_days) if body.grace_days else None,
            auto_renew=body.auto_renew,
            term=_term(body.term_value, body.term_unit),
            renewal_quantity=quantity_of(body.renewal_quantity),
            contract_id=body.contract_id,
            plan_id=body.plan_id,
            allotment=quantity_of(body.allotment),
            attributes=body.attributes.stored() if body.attributes is not None else {},
            filters=body.filters,
            rollover_max=quantity_of(body.rollover_max),
            rollover_min=quantity_of(body.rollover_min),
        ),
        now,
    )
    return get_entitlement(ent.id, runtime, caller)


class EntitlementPatch(RequestBody):
    """Fields left out stay as they are; ``null`` clears quantity (unlimited),
    ends_at (open-ended), allotment or attributes. ``attributes`` replaces the whole
    object."""

    row_version: int = Field(description="the row_version you read: 409 if it moved on")
    quantity: QuantityText | None = None
    renewal_quantity: QuantityText | None = None
    ends_at: datetime | None = None
    priority: int | None = Field(default=None, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    contract_mode: ContractMode | None = None
    auto_renew: bool | None = Field(
        default=None, description="false: it ends with its current term; true: it renews"
    )
    allotment: QuantityText | None = None
    attributes: TenantAttributes | None = Field(
        default=None, description="the tenant page's own fields (replaced whole; not returned)"
    )
    filters: Dimensions | None = Field(
        default=None, description="fixed at creation: other dimensions are refused (400)"
    )
    rollover_max: QuantityText | None = Field(
        default=None, description="fixed at creation: another value is refused (400)"
    )
    rollover_min: QuantityText | None = Field(
        default=None, description="fixed at creation: another value is refused (400)"
    )


@router.patch("/entitlements/{entitlement_id}", response_model=EntitlementOut)
def change_entitlement(
    entitlement_id: uuid.UUID, body: EntitlementPatch, runtime: RuntimeDep, caller: Manager
) -> EntitlementOut:
    """Change quantity (the current period's), renewal quantity, end, priority,
    allotment, attributes or contract mode (TRIAL -> PRODUCTION makes an
    auto-renewing trial renew)."""
    given = body.model_fields_set
    change = EntitlementChange(
        row_version=body.row_version,
        quantity=quantity_of(body.quantity) if "quantity" in given else UNSET,
        renewal_quantity=quantity_of(body.renewal_quantity)
        if "renewal_quantity" in given
        else UNSET,
        ends_at=moment(body.ends_at, "ends_at") if "ends_at" in given else UNSET,
        priority=body.priority,
        contract_mode=body.contract_mode,
        auto_renew=body.auto_renew,
        allotment=quantity_of(body.allotment) if "allotment" in given else UNSET,
        attributes=(body.attributes.stored() if body.attributes is not None else {})
        if "attributes" in given
        else UNSET,
        filters=body.filters if "filters" in given else UNSET,
        rollover_max=quantity_of(body.rollover_max) if "rollover_max" in given else UNSET,
        rollover_min=quantity_of(body.rollover_min) if "rollover_min" in given else UNSET,
    )
    runtime.catalog.update_entitlement(caller.org, entitlement_id, change, utcnow())
    return get_entitlement(entitlement_id, runtime, caller)


def _term(value: int | None, unit: TermUnit | None) -> Term | None:
    if (value is None) != (unit is None):
        raise InvalidError("give term_value and term_unit together (or neither)")
    check_term(value, unit)
    return Term.of(value, unit) if value is not None and unit is not None else None


class StatusChange(RequestBody):
    reason: str = Field(default="", max_length=500, pattern=NO_NUL_PATTERN)
    row_version: int | None = Field(default=None, description="refuse (409) if the row moved on")


def _change(
    action: OperatorAction,
    entitlement_id: uuid.UUID,
    body: StatusChange | None,
    runtime: Runtime,
    caller: Principal,
) -> EntitlementOut:
    runtime.queries.owned(caller.org, entitlement_id)
    change = body or StatusChange()
    runtime.catalog.change_status(
        entitlement_id,
        action,
        utcnow(),
        reason=change.reason,
        expected_version=change.row_version,
        actor=f"api-key:{caller.key_id}",
    )
    return get_entitlement(entitlement_id, runtime, caller)


@router.post("/entitlements/{entitlement_id}/suspend", response_model=EntitlementOut)
def suspend(
    entitlement_id: uuid.UUID,
    runtime: RuntimeDep,
    caller: Manager,
    body: StatusChange | None = None,
) -> EntitlementOut:
    """Usage is refused (dead-lettered as ``suspended``) until resumed."""
    return _change(OperatorAction.SUSPEND, entitlement_id, body, runtime, caller)


@router.post("/entitlements/{entitlement_id}/resume", response_model=EntitlementOut)
def resume(
    entitlement_id: uuid.UUID,
    runtime: RuntimeDep,
    caller: Manager,
    body: StatusChange | None = None,
) -> EntitlementOut:
    return _change(OperatorAction.RESUME, entitlement_id, body, runtime, caller)


@router.post("/entitlements/{entitlement_id}/terminate", response_model=EntitlementOut)
def terminate(
    entitlement_id: uuid.UUID,
    runtime: RuntimeDep,
    caller: Manager,
    body: StatusChange | None = None,
) -> EntitlementOut:
    """Final: no usage counts on it any more."""
    return _change(OperatorAction.TERMINATE, entitlement_id, body, runtime, caller)


class _AtStep(RequestBody):
    """The body of a void or reset: an instant, why, and the row it expects."""

    reason: str = Field(default="", max_length=500, pattern=NO_NUL_PATTERN)
    row_version: int | None = Field(default=None, description="refuse (409) if the row moved on")


class VoidIn(_AtStep):
    at: datetime | None = Field(
        default=None, description="void from this instant (default now; ahead allowed, not past)"
    )


class ResetIn(_AtStep):
    at: datetime | None = Field(
        default=None, description="split the period containing it there (default now; not past)"
    )


def _at_step(
    step: Callable[..., Entitlement],
    entitlement_id: uuid.UUID,
    given: VoidIn | ResetIn,
    runtime: Runtime,
    caller: Principal,
) -> EntitlementOut:
    runtime.queries.owned(caller.org, entitlement_id)
    step(
        entitlement_id,
        utcnow(),
        at=moment(given.at, "at"),
        reason=given.reason,
        expected_version=given.row_version,
        actor=f"api-key:{caller.key_id}",
    )
    return get_entitlement(entitlement_id, runtime, caller)


@router.post("/entitlements/{entitlement_id}/void", response_model=EntitlementOut)
def void(
    entitlement_id: uuid.UUID,
    runtime: RuntimeDep,
    caller: Manager,
    body: VoidIn | None = None,
) -> EntitlementOut:
    """From ``at`` (default now) the grant takes no more usage; usage timed before
    still counts. Ahead, it stays as it is until then. Retried with the same ``at``,
    nothing changes; 409 if it is void or terminated from another instant."""
    step = runtime.catalog.void_entitlement
    return _at_step(step, entitlement_id, body or VoidIn(), runtime, caller)


@router.post("/entitlements/{entitlement_id}/reset", response_model=EntitlementOut)
def reset(
    entitlement_id: uuid.UUID,
    runtime: RuntimeDep,
    caller: Manager,
    body: ResetIn | None = None,
) -> EntitlementOut:
    """Close the PRE_PAID period containing ``at`` (default now) there and open a
    fresh one from it to that period's end (its quantity, nothing consumed). Retried
    with the same ``at``, nothing changes."""
    step = runtime.catalog.reset_entitlement
    return _at_step(step, entitlement_id, body or ResetIn(), runtime, caller)


class PeriodOut(BaseModel):
    period_start: str
    period_end: str | None
    quantity: str | None
    consumed: str = Field(
        description="real time: flushed plus not yet flushed, as the value read counts it"
    )
    rolled_over: str | None = Field(
        default=None,
        description=(
            "what this renewed term carried from the one before (included in quantity), "
            "as of now: a late event into the term before still changes it; null: the "
            "entitlement does not roll over, or the period is not a renewed term"
        ),
    )


@router.get("/entitlements/{entitlement_id}/periods", response_model=list[PeriodOut])
def periods(entitlement_id: uuid.UUID, runtime: RuntimeDep, caller: Viewer) -> list[PeriodOut]:
    """Every period, oldest first, with its consumption in real time (the same figure
    as the value read and ``GET /v1/entitlements/{id}``, before and after a flush)."""
    return [
        PeriodOut(
            period_start=isoformat(p.period.start),
            period_end=isoformat_or_none(p.period.end),
            quantity=format_optional_quantity(p.period.quantity),
            consumed=format_quantity(p.consumed),
            rolled_over=format_optional_quantity(p.rolled_over),
        )
        for p in runtime.queries.periods(caller.org, entitlement_id, utcnow())
    ]


class TransitionOut(BaseModel):
    from_status: str
    to_status: str
    at: str
    recorded_at: str
    reason: str
    job_run_id: str


@router.get("/entitlements/{entitlement_id}/transitions", response_model=list[TransitionOut])
def transitions(
    entitlement_id: uuid.UUID, runtime: RuntimeDep, caller: Viewer
) -> list[TransitionOut]:
    return [
        TransitionOut(
            from_status=t.from_status,
            to_status=t.to_status,
            at=isoformat(t.at),
            recorded_at=isoformat(t.recorded_at),
            reason=t.reason,
            job_run_id=t.job_run_id,
        )
        for t in runtime.queries.history(caller.org, entitlement_id)
    ]
