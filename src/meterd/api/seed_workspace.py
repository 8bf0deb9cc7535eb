"""``GET /api/workspace/entitlement-operations/entitlements``: runtime entitlements.

How meterd's model maps onto the page (its enums are integers it does not
define; meterd fixes them as follows):

* Model = feature (``EntitlementModelId``, ``EntitlementModelDisplayName``);
  ``ModelType``: 0 FEATURE or STORAGE, 1 USERS, 2 TRANSACTIONS, 3 CREDITS.
* Plan = meterd plan; ``PlanFamilies`` its families. ``ConditionFamily``,
  ``TermKind``, ``TermValue``, ``TermUnit`` and ``RenewalPolicyId``
  (``auto_renew`` or ``none``) filter on the linked plan (see ``meterd.plans``);
  entitlements without a plan never match them.
* Owner = the customer: ``EntityDefinitionId`` ``customer``, instance and
  display name the customer id; ``OwnerPartyRoleId`` ``customer`` matches all.
* ``Status``: 0 PENDING, 1 ACTIVE, 2 GRACE, 3 EXPIRED, 4 SUSPENDED,
  5 TERMINATED (6 matches nothing); ``EffectiveState`` the same, 8 EXHAUSTED.
* ``RowVersion`` is a UUID derived from (id, row_version): it changes exactly
  when the row does. ``ResourceCount`` is 1 (the feature),
  ``BeneficiaryCount`` 1 (the customer).
* ``Page`` (1-based) and ``PageSize`` (default 20, at most 200) page by
  ``EntitlementNumber``. Parameter names are matched case-insensitively.
* Auth: ``Authorization: Bearer <key>``, ``x-api-key`` or ``access_token``;
  a missing permission is 403 as problem details, a bad parameter 400 in the
  ``Data``/``Errors``/``Warnings``/``Success`` envelope.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import and_, exists, func, or_, select

from meterd.api.auth import RuntimeDep, require_allowing_query_token
from meterd.api.entitlements import with_balances
from meterd.domain import PRINTABLE_PATTERN, EffectiveState, FeatureType, Status
from meterd.plans import TermUnit
from meterd.services.keys import Permission, Principal
from meterd.storage.listing import contains_pattern
from meterd.storage.models import Entitlement, Feature, Plan, PlanFamily, plan_family_links
from meterd.timeutil import as_utc, isoformat_or_none

router = APIRouter(tags=["seed: workspace runtime entitlements"])

STATUS_CODES = {
    Status.PENDING: 0,
    Status.ACTIVE: 1,
    Status.GRACE: 2,
    Status.EXPIRED: 3,
    Status.SUSPENDED: 4,
    Status.TERMINATED: 5,
}
STATE_CODES = {
    **{EffectiveState(s.value): c for s, c in STATUS_CODES.items()},
    EffectiveState.EXHAUSTED: 8,
}
MODEL_TYPES = {
    FeatureType.FEATURE: 0,
    FeatureType.STORAGE: 0,
    FeatureType.USERS: 1,
    FeatureType.TRANSACTIONS: 2,
    FeatureType.CREDITS: 3,
}
PRINTABLE = re.compile(PRINTABLE_PATTERN)
ROW_VERSION_NAMESPACE = uuid.UUID("6f1d3a52-5d0c-4a53-9a63-3c9a2b1e7c10")

PARAMS = {
    name.lower(): name
    for name in (
        "ModelId", "PlanId", "PlanFamilyIds", "ConditionFamily", "TermKind", "TermValue",
        "TermUnit", "RenewalPolicyId", "OwnerPartyRoleId", "OwnerEntityInstanceId", "Status",
        "StartsFromUtc", "StartsToUtc", "EndsFromUtc", "EndsToUtc", "Search", "Page",
        "PageSize", "access_token",
    )
}  # fmt: skip


class ParameterError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RuntimeEntitlementList(BaseModel):
    """The documented envelope (see the module docstring for the row fields)."""

    Data: dict[str, Any] | None
    Errors: list[dict[str, Any]] | None
    Warnings: list[dict[str, Any]] | None
    Success: bool


def _envelope(data: Any, errors: list[dict[str, Any]], status: int = 200) -> JSONResponse:
    body = {"Data": data, "Errors": errors, "Warnings": [], "Success": not errors}
    return JSONResponse(body, status_code=status)


class _Params:
    """The query parameters, names matched case-insensitively, values typed."""

    def __init__(self, request: Request) -> None:
        self.values: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            canonical = PARAMS.get(name.lower())
            if canonical is None:
                raise ParameterError(name, f"unknown query parameter {name[:60]!r}")
            self.values.setdefault(canonical, []).append(value)

    def text(self, name: str) -> str | None:
        found = self.values.get(name)
        if not found:
            return None
        if len(found[-1]) > 200:
            raise ParameterError(name, f"{name} is too long")
        if not PRINTABLE.fullmatch(found[-1]):
            raise ParameterError(name, f"{name} must not contain control characters")
        return found[-1]

    def one_uuid(self, name: str) -> uuid.UUID | None:
        raw = self.text(name)
        try:
            return None if raw is None else uuid.UUID(raw)
        except ValueError:
            raise ParameterError(name, f"{name} must be a UUID") from None

    def many_uuids(self, name: str) -> list[uuid.UUID]:
        items = [i for raw in self.values.get(name, []) for i in raw.split(",") if i.strip()]
        try:
            return [uuid.UUID(i.strip()) for i in items[:200]]
        except ValueError:
            raise ParameterError(name, f"{name} must be UUIDs") from None

    def integer(self, name: str, allowed: range | None = None) -> int | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ParameterError(name, f"{name} must be an integer") from None
        if allowed is not None and value not in allowed:
            raise ParameterError(name, f"{name} must be one of {allowed.start}..{allowed.stop - 1}")
        return value

    def moment(self, name: str) -> datetime | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            return as_utc(datetime.fromisoformat(raw.replace("Z", "+00:00")))
        except ValueError:
            raise ParameterError(name, f"{name} must be an ISO 8601 date-time") from None


def _conditions(p: _Params, org: str) -> list[Any]:
    return [Entitlement.org_id == org, *_plan_conditions(p), *_entitlement_conditions(p)]


def _plan_conditions(p: _Params) -> list[Any]:
    """Filters on the linked plan (entitlements without one never match them)."""
    where: list[Any] = []
    if (plan := p.one_uuid("PlanId")) is not None:
        where.append(Entitlement.plan_id == plan)
    if families := p.many_uuids("PlanFamilyIds"):
        where.append(
            exists(
                select(plan_family_links.c.plan_id).where(
                    plan_family_links.c.plan_id == Entitlement.plan_id,
                    plan_family_links.c.family_id.in_(families),
                )
            )
        )
    if (family := p.integer("ConditionFamily", range(0, 4))) is not None:
        where.append(Plan.condition_family == family)
    if (kind := p.integer("TermKind", range(0, 4))) is not None:
        where.append(Plan.term_kind == kind)
    if (value := p.integer("TermValue")) is not None:
        where.append(Plan.term_value == value)
    if (unit := p.integer("TermUnit", range(0, 3))) is not None:
        where.append(Plan.term_unit == list(TermUnit)[unit].value)
    if (policy := p.text("RenewalPolicyId")) is not None:
        if policy not in ("auto_renew", "none"):
            raise ParameterError("RenewalPolicyId", "RenewalPolicyId must be auto_renew or none")
        where.append(Plan.auto_renew.is_(policy == "auto_renew"))
    return where


def _entitlement_conditions(p: _Params) -> list[Any]:
    where: list[Any] = []
    if (model := p.one_uuid("ModelId")) is not None:
        where.append(Entitlement.feature_id == model)
    if (role := p.text("OwnerPartyRoleId")) is not None and role != "customer":
        where.append(Entitlement.id.is_(None))  # meterd's only owner role is "customer"
    if (owner := p.text("OwnerEntityInstanceId")) is not None:
        where.append(Entitlement.customer_id == owner)
    if (status := p.integer("Status", range(0, 7))) is not None:
        by_code = {c: s.value for s, c in STATUS_CODES.items()}
        where.append(Entitlement.status == by_code.get(status, "-"))
    bounds = (
        ("StartsFromUtc", Entitlement.starts_at.__ge__),
        ("StartsToUtc", Entitlement.starts_at.__le__),
        ("EndsFromUtc", Entitlement.ends_at.__ge__),
        ("EndsToUtc", Entitlement.ends_at.__le__),
    )
    for name, compare in bounds:
        if (moment := p.moment(name)) is not None:
            where.append(compare(moment))
    if (search := p.text("Search")) is not None:
        pattern = contains_pattern(search)
        where.append(
            or_(
                Plan.display_name.ilike(pattern, escape="\\"),
                Feature.name.ilike(pattern, escape="\\"),
                Entitlement.customer_id.ilike(pattern, escape="\\"),
            )
        )
    return where


@router.get(
    "/api/workspace/entitlement-operations/entitlements",
    response_model=RuntimeEntitlementList,
    responses={403: {"description": "problem details"}},
)
def runtime_entitlements(
    request: Request,
    runtime: RuntimeDep,
    caller: Annotated[
        Principal, Depends(require_allowing_query_token(Permission.ENTITLEMENTS_VIEW))
    ],
) -> JSONResponse:
    """Return runtime entitlements matching the supplied filters."""
    try:
        params = _Params(request)
        page = params.integer("Page")
        size = params.integer("PageSize")
        page = 1 if page is None else page
        size = 20 if size is None else size
        if page < 1:
            raise ParameterError("Page", "Page is one-based: 1 or more")
        if not 1 <= size <= 200:
            raise ParameterError("PageSize", "PageSize must be 1..200")
        where = _conditions(params, caller.org)
    except ParameterError as exc:
        error = {
            "Code": "InvalidParameter",
            "Message": str(exc),
            "Target": "query",
            "Field": exc.field,
            "Metadata": {},
            "Type": 0,
            "Severity": 2,
        }
        return _envelope(None, [error], status=400)
    base = (
        select(Entitlement, Feature, Plan)
        .join(Feature, Feature.id == Entitlement.feature_id)
        .outerjoin(Plan, and_(Plan.id == Entitlement.plan_id, Plan.org_id == Entitlement.org_id))
        .where(*where)
    )
    with runtime.repository.sessions() as s:
        total = int(s.scalar(select(func.count()).select_from(base.subquery())) or 0)
        rows = list(
            s.execute(base.order_by(Entitlement.number).offset((page - 1) * size).limit(size))
        )
        families = {plan.id: list(plan.families) for _, _, plan in rows if plan is not None}
        s.expunge_all()
    balances = {
        ent.id: balance
        for ent, _, balance in with_balances(runtime, [(e, f.key) for e, f, _ in rows])
    }
    items = [
        _row(ent, feature, plan, families, balances[ent.id].state) for ent, feature, plan in rows
    ]
    data = {"Items": items, "TotalCount": total, "Page": page, "PageSize": size}
    return _envelope(data, [])


def _row(
    ent: Entitlement,
    feature: Feature,
    plan: Plan | None,
    families: dict[uuid.UUID, list[PlanFamily]],
    state: EffectiveState,
) -> dict[str, Any]:
    return {
        "Id": str(ent.id),
        "EntitlementNumber": ent.number,
        "EntitlementModelId": str(feature.id),
        "EntitlementModelDisplayName": feature.name,
        "ModelType": MODEL_TYPES.get(FeatureType(feature.type), 0),
        "EntitlementPlanId": str(plan.id) if plan else None,
        "EntitlementPlanDisplayName": plan.display_name if plan else None,
        "Owner": {
            "EntityDefinitionId": "customer",
            "EntityDisplayName": "Customer",
            "EntityInstanceId": ent.customer_id,
            "DisplayName": ent.customer_id,
        },
        "Status": STATUS_CODES[Status(ent.status)],
        "EffectiveState": STATE_CODES[state],
        "StartsAtUtc": isoformat_or_none(ent.starts_at),
        "EndsAtUtc": isoformat_or_none(ent.ends_at),
        "GraceUntilUtc": isoformat_or_none(ent.grace_until),
        "IssuedAtUtc": isoformat_or_none(ent.issued_at),
        "IssuedByUserId": None,
        "ResourceCount": 1,
        "BeneficiaryCount": 1,
        "PlanFamilies": [
            {
                "Id": str(f.id),
                "Key": f.key,
                "DisplayName": f.display_name,
                "Description": f.description,
                "SortOrder": f.sort_order,
                "IsActive": f.is_active,
            }
            for f in (families.get(plan.id, []) if plan else [])
        ],
        "RowVersion": str(uuid.uuid5(ROW_VERSION_NAMESPACE, f"{ent.id}:{ent.row_version}")),
    }
