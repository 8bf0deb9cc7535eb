"""``GET /api/workspace/entitlement-operations/entitlements``: runtime entitlements.

How meterd's model maps onto the page (its enums are integers it does not
define; meterd fixes them as follows):

* Model = feature (``EntitlementModelId``, ``EntitlementModelDisplayName``);
  ``ModelType``: 0 FEATURE or STORAGE, 1 USERS, 2 TRANSACTIONS, 3 CREDITS.
* Plan = meterd plan; ``PlanFamilies`` its families. ``ConditionFamily``,
  ``TermKind``, ``TermValue``, ``TermUnit`` and ``RenewalPolicyId``
  (``auto_renew`` or ``none``) filter on the linked plan (see ``meterd.core.plans``);
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
* ``Filters`` (meterd's own field): the entitlement's dimensions, an object of
  data property -> value (null: none).
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

from meterd.api.auth import RuntimeDep, require_allowing_query_token
from meterd.api.exact_json import ExactJSONRoute
from meterd.core.compat_filters import WorkspaceFilters
from meterd.core.domain import PRINTABLE_PATTERN, EffectiveState, FeatureType, Status
from meterd.core.errors import InvalidError
from meterd.core.filters import DATETIME_RANGE
from meterd.core.plans import TermUnit
from meterd.core.timeutil import as_utc, isoformat_or_none, utcnow
from meterd.services.api_keys import Permission, Principal
from meterd.services.compat_queries import WorkspaceItem

router = APIRouter(tags=["seed: workspace runtime entitlements"], route_class=ExactJSONRoute)

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
#: The page types its integers as int32; pages are 1-based, of at most 200 rows.
INT32 = range(-(2**31), 2**31)
PAGES = range(1, 2**31)
PAGE_SIZES = range(1, 201)


def _int32(description: str, *values: int, minimum: int = INT32.start) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "format": "int32"}
    schema |= {"enum": list(values)} if values else {"minimum": minimum, "maximum": INT32.stop - 1}
    return {"schema": schema, "description": description}


def _text(description: str, **schema: Any) -> dict[str, Any]:
    return {
        "schema": {"type": "string", "maxLength": 200, "pattern": PRINTABLE_PATTERN, **schema},
        "description": description,
    }


def _uuid(description: str) -> dict[str, Any]:
    return {"schema": {"type": "string", "format": "uuid"}, "description": description}


def _date(description: str) -> dict[str, Any]:
    schema = {"type": "string", "format": "date-time"}
    return {"schema": schema, "description": f"{description} (in UTC between {DATETIME_RANGE})"}


#: The page's query parameters by their canonical names, as documented in the
#: OpenAPI spec (``access_token`` is the auth dependency's). Names match
#: case-insensitively; ``_Params`` parses the raw query string.
PARAMETERS: dict[str, dict[str, Any]] = {
    "ModelId": _uuid("Optional entitlement model (meterd feature) filter."),
    "PlanId": _uuid("Optional entitlement plan filter."),
    "PlanFamilyIds": {
        "schema": {"type": "array", "maxItems": 200, "items": {"type": "string", "format": "uuid"}},
        "description": "Optional plan family ids that at least one linked plan family must "
        "match (repeated, or comma-separated).",
    },
    "ConditionFamily": _int32(
        "0 UNLIMITED, 1 QUANTITY, 2 METERED, 3 TRIAL_QUANTITY (of the linked plan).", 0, 1, 2, 3
    ),
    "TermKind": _int32(
        "0 OPEN_ENDED, 1 FIXED, 2 RENEWING, 3 TRIAL (of the linked plan).", 0, 1, 2, 3
    ),
    "TermValue": _int32("Optional term value of the linked plan, paired with TermKind."),
    "TermUnit": _int32("0 DAY, 1 MONTH, 2 YEAR (of the linked plan).", 0, 1, 2),
    "RenewalPolicyId": _text("The linked plan's renewal policy.", enum=["auto_renew", "none"]),
    "OwnerPartyRoleId": _text("Optional owner party role filter (meterd's only role: customer)."),
    "OwnerEntityInstanceId": _text("Optional owner (customer id) filter."),
    "Status": _int32(
        "0 PENDING, 1 ACTIVE, 2 GRACE, 3 EXPIRED, 4 SUSPENDED, 5 TERMINATED (6 matches nothing).",
        *range(0, 7),
    ),
    "StartsFromUtc": _date("Optional inclusive start boundary"),
    "StartsToUtc": _date("Optional inclusive start boundary end"),
    "EndsFromUtc": _date("Optional inclusive end boundary"),
    "EndsToUtc": _date("Optional inclusive end boundary end"),
    "Search": _text("Optional text matched against plan, model and owner names."),
    "Page": _int32("One-based page number (default 1).", minimum=PAGES.start),
    "PageSize": {
        "schema": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 200},
        "description": "Requested page size (default 20, at most 200).",
    },
}
PARAMS = {name.lower(): name for name in (*PARAMETERS, "access_token")}


class ParameterError(InvalidError):
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

    def integer(self, name: str, allowed: range = INT32) -> int | None:
        """An integer within ``allowed`` (the page types every integer as an int32)."""
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ParameterError(name, f"{name} must be an integer") from None
        if value not in allowed:
            if allowed == INT32:
                raise ParameterError(
                    name, f"{name} must be a 32-bit integer ({INT32.start}..{INT32.stop - 1})"
                )
            raise ParameterError(name, f"{name} must be one of {allowed.start}..{allowed.stop - 1}")
        return value

    def moment(self, name: str) -> datetime | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ParameterError(name, f"{name} must be an ISO 8601 date-time") from None
        try:
            return as_utc(moment)
        except OverflowError:
            raise ParameterError(
                name, f"{name} is out of range: in UTC it must fall between {DATETIME_RANGE}"
            ) from None


def workspace_filters(p: _Params) -> WorkspaceFilters:
    """The page's filters, typed (a bad value is a ``ParameterError``)."""
    unit = p.integer("TermUnit", range(0, len(TermUnit)))
    policy = p.text("RenewalPolicyId")
    if policy is not None and policy not in ("auto_renew", "none"):
        raise ParameterError("RenewalPolicyId", "RenewalPolicyId must be auto_renew or none")
    role = p.text("OwnerPartyRoleId")
    status = p.integer("Status", range(0, 7))
    by_code = {c: s.value for s, c in STATUS_CODES.items()}
    return WorkspaceFilters(
        plan_id=p.one_uuid("PlanId"),
        plan_family_ids=tuple(p.many_uuids("PlanFamilyIds")),
        condition_family=p.integer("ConditionFamily", range(0, 4)),
        term_kind=p.integer("TermKind", range(0, 4)),
        term_value=p.integer("TermValue"),
        term_unit=list(TermUnit)[unit].value if unit is not None else None,
        auto_renew=None if policy is None else policy == "auto_renew",
        model_id=p.one_uuid("ModelId"),
        # meterd's only owner role is "customer".
        owner_role_matches=role is None or role == "customer",
        owner=p.text("OwnerEntityInstanceId"),
        status=by_code.get(status) if status is not None else None,
        status_matches_nothing=status is not None and status not in by_code,
        starts_from=p.moment("StartsFromUtc"),
        starts_to=p.moment("StartsToUtc"),
        ends_from=p.moment("EndsFromUtc"),
        ends_to=p.moment("EndsToUtc"),
        search=p.text("Search"),
    )


@router.get(
    "/api/workspace/entitlement-operations/entitlements",
    response_model=RuntimeEntitlementList,
    responses={
        400: {
            "model": RuntimeEntitlementList,
            "description": "a bad parameter: the envelope's Errors name it (Success false)",
        },
        403: {"description": "problem details"},
    },
    openapi_extra={
        "parameters": [
            {"name": name, "in": "query", "required": False, **spec}
            for name, spec in PARAMETERS.items()
        ]
    },
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
        if page not in PAGES:
            raise ParameterError("Page", f"Page is one-based: 1..{PAGES.stop - 1}")
        if size not in PAGE_SIZES:
            raise ParameterError("PageSize", f"PageSize must be 1..{PAGE_SIZES.stop - 1}")
        filters = workspace_filters(params)
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
    found, total = runtime.compat_queries.workspace_page(caller.org, filters, page, size, utcnow())
    items = [_row(item) for item in found]
    data = {"Items": items, "TotalCount": total, "Page": page, "PageSize": size}
    return _envelope(data, [])


def _row(item: WorkspaceItem) -> dict[str, Any]:
    ent, feature, plan = item.entitlement, item.feature, item.plan
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
        "Status": STATUS_CODES[item.balance.status],
        "EffectiveState": STATE_CODES[item.balance.state],
        "StartsAtUtc": isoformat_or_none(ent.starts_at),
        "EndsAtUtc": isoformat_or_none(item.balance.ends_at),
        "GraceUntilUtc": isoformat_or_none(item.balance.grace_until),
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
            for f in item.families
        ],
        "RowVersion": str(uuid.uuid5(ROW_VERSION_NAMESPACE, f"{ent.id}:{ent.row_version}")),
        "Filters": dict(ent.filters) if ent.filters else None,
    }
