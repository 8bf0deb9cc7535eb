"""``GET /entitlements/customer/unique/{customer_id}``: Zenskar's per-feature sums.

How meterd's model maps onto the page:

* Zenskar's "entitlement" (the thing granted) is a meterd **feature**; its
  grants to a customer are meterd entitlements. One result per feature the
  customer holds: ``total_quantity`` sums the grants' quantities (unlimited
  grants add nothing), ``total_quantity_used`` their real-time consumption in
  the current (or last) period, ``total_expired_entitlements`` counts grants
  whose status is EXPIRED.
* Filters apply to the grants before they are summed: ``id`` (grant),
  ``entitlement`` (feature id), ``customer``, ``contract_id``, ``created_at``,
  ``active_from`` (starts_at), ``quantity``, ``quantity_used`` (real time), each
  with ``__neq``, ``__gt``, ``__gte``, ``__lt``, ``__lte``, ``__in``,
  ``__isnull``. ``search`` matches the feature's key, name or description.
* ``sort_key``: ``id``, ``name``, ``created_at``, ``total_quantity``,
  ``total_quantity_used`` or ``total_expired_entitlements``; ``sort_type``
  ``asc``/``desc``. Cursor pages (``next``/``previous``) of ``limit`` (default 10).
* Headers ``x-api-key`` and ``organisation`` (must name the key's org).
* ``customer_id`` is any meterd customer id (the page types it as a UUID).
* Numbers are JSON numbers, written exactly (never through a float).
* ``filters`` (meterd's own field): the distinct dimensions of the grants summed,
  in the order first met (a grant without dimensions adds none; ``[]``: none of
  them has any). The sums cover every grant whatever its dimensions.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr

from meterd.api.auth import RuntimeDep, require
from meterd.api.errors import HttpError
from meterd.api.exact_json import ExactJSONResponse, ExactJSONRoute, exact_number
from meterd.api.openapi import filter_parameters
from meterd.core.domain import CUSTOMER_ID_MAX, PRINTABLE_PATTERN, Status
from meterd.core.errors import InvalidError
from meterd.core.filters import Filter, Kind, Op, parse_filters
from meterd.core.paging import Cursor, decode, encode
from meterd.core.timeutil import isoformat_seconds, utcnow
from meterd.services.api_keys import Permission, Principal
from meterd.services.values import Feature

router = APIRouter(tags=["seed: Zenskar"], route_class=ExactJSONRoute)

FIELDS = {
    "id": Kind.UUID,
    "entitlement": Kind.UUID,
    "customer": Kind.STRING,
    "contract_id": Kind.STRING,
    "created_at": Kind.DATETIME,
    "active_from": Kind.DATETIME,
    "quantity": Kind.DECIMAL,
    "quantity_used": Kind.DECIMAL,
}
RESERVED = ("cursor", "limit", "sort_key", "sort_type", "search")
SORT_KEYS = (
    "id",
    "name",
    "created_at",
    "total_quantity",
    "total_quantity_used",
    "total_expired_entitlements",
)
#: A customer with more grants than this is refused (the sums are made in memory).
MAX_GRANTS = 10_000


class EntitlementSchema(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    entitlement_type: str
    units: str
    is_active: bool
    product_id: uuid.UUID | None
    created_at: str


class EntitlementCustomerSumResponseSchema(BaseModel):
    entitlement: EntitlementSchema
    total_quantity: float
    total_quantity_used: float
    total_expired_entitlements: int
    filters: list[dict[str, StrictStr | StrictInt | StrictBool]] = Field(
        description="meterd: the distinct dimensions of the grants summed ([]: none)"
    )


class UniqueEntitlementsPage(BaseModel):
    results: list[EntitlementCustomerSumResponseSchema]
    next: str | None
    previous: str | None
    total_count: int | None


@dataclass(slots=True)
class _Group:
    feature: Feature
    total_quantity: Decimal = Decimal(0)
    total_quantity_used: Decimal = Decimal(0)
    total_expired_entitlements: int = 0
    filters: list[dict[str, Any]] = field(default_factory=list)


def _matches(value: Any, f: Filter) -> bool:
    if f.op is Op.ISNULL:
        return (value is None) is f.value
    if f.op is Op.IN:
        return value in f.value
    if value is None:
        return f.op is Op.NEQ
    comparisons: dict[Op, Callable[[Any, Any], bool]] = {
        Op.EQ: lambda a, b: bool(a == b),
        Op.NEQ: lambda a, b: bool(a != b),
        Op.GT: lambda a, b: bool(a > b),
        Op.GTE: lambda a, b: bool(a >= b),
        Op.LT: lambda a, b: bool(a < b),
        Op.LTE: lambda a, b: bool(a <= b),
    }
    return comparisons[f.op](value, f.value)


def _sort_value(group: _Group, key: str) -> Any:
    if key == "id":
        return group.feature.id
    if key == "name":
        return group.feature.name.casefold()
    if key == "created_at":
        return group.feature.created_at
    return getattr(group, key)


@router.get(
    "/entitlements/customer/unique/{customer_id}",
    response_model=UniqueEntitlementsPage,
    response_class=ExactJSONResponse,
    openapi_extra={"parameters": filter_parameters(FIELDS)},
)
def unique_entitlements(
    request: Request,
    customer_id: Annotated[
        str, Path(min_length=1, max_length=CUSTOMER_ID_MAX, pattern=PRINTABLE_PATTERN)
    ],
    runtime: RuntimeDep,
    caller: Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_VIEW))],
    organisation: Annotated[str, Header(max_length=64)],
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
    sort_key: Annotated[str | None, Query(json_schema_extra={"enum": list(SORT_KEYS)})] = None,
    sort_type: Annotated[str | None, Query(pattern="^(asc|desc)$")] = None,
    search: Annotated[str | None, Query(max_length=200, pattern=PRINTABLE_PATTERN)] = None,
) -> ExactJSONResponse:
    """List unique entitlements for customer (Zenskar-compatible)."""
    if organisation != caller.org:
        raise HttpError(403, "the organisation header does not match the API key")
    key = sort_key or "name"
    if key not in SORT_KEYS:
        raise InvalidError(f"sort_key must be one of {', '.join(SORT_KEYS)}")
    descending = sort_type == "desc"
    sort = f"{key}:{'desc' if descending else 'asc'}"
    filters = parse_filters(request.query_params.multi_items(), FIELDS, reserved=RESERVED)
    page_cursor = decode(cursor, sort) if cursor else None

    groups = _groups(runtime, caller.org, customer_id, filters, search)
    ordered = sorted(groups, key=lambda g: (_sort_value(g, key), str(g.feature.id)))
    if descending:
        ordered.reverse()
    results, next_cursor, previous_cursor = _page(ordered, key, sort, page_cursor, limit or 10)
    body = {
        "results": [
            {
                "entitlement": {
                    "id": str(g.feature.id),
                    "name": g.feature.name,
                    "description": g.feature.description,
                    "entitlement_type": g.feature.type.title(),
                    "units": g.feature.units,
                    "is_active": g.feature.is_active,
                    "product_id": str(g.feature.product_id) if g.feature.product_id else None,
                    "created_at": isoformat_seconds(g.feature.created_at),
                },
                "total_quantity": exact_number(g.total_quantity),
                "total_quantity_used": exact_number(g.total_quantity_used),
                "total_expired_entitlements": g.total_expired_entitlements,
                "filters": g.filters,
            }
            for g in results
        ],
        "next": encode(next_cursor) if next_cursor else None,
        "previous": encode(previous_cursor) if previous_cursor else None,
        "total_count": len(ordered),
    }
    return ExactJSONResponse(body)


def _groups(
    runtime: Any, org: str, customer_id: str, filters: list[Filter], search: str | None
) -> list[_Group]:
    grant_filters = [
        Filter("customer_id" if f.field == "customer" else f.field, f.op, f.value)
        for f in filters
        if f.field != "quantity_used"
    ]
    used_filters = [f for f in filters if f.field == "quantity_used"]
    grants = runtime.compat_queries.grants_of_customer(
        org, customer_id, grant_filters, MAX_GRANTS + 1, utcnow(), search
    )
    if len(grants) > MAX_GRANTS:
        raise InvalidError(f"the customer has more than {MAX_GRANTS} matching grants: filter more")
    features = {feature.id: feature for _, feature, _ in grants}
    groups: dict[uuid.UUID, _Group] = {}
    for ent, _, balance in grants:
        if not all(_matches(balance.consumed, f) for f in used_filters):
            continue
        group = groups.setdefault(ent.feature_id, _Group(features[ent.feature_id]))
        group.total_quantity += balance.quantity or Decimal(0)
        group.total_quantity_used += balance.consumed
        group.total_expired_entitlements += balance.status is Status.EXPIRED
        if ent.filters and ent.filters not in group.filters:
            group.filters.append(dict(ent.filters))
    return list(groups.values())


def _page(
    ordered: list[_Group], key: str, sort: str, cursor: Cursor | None, limit: int
) -> tuple[list[_Group], Cursor | None, Cursor | None]:
    """Keyset paging over the sorted groups (position of the boundary group)."""
    ids = [str(g.feature.id) for g in ordered]
    if cursor is None:
        start, end = 0, limit
    else:
        if cursor.row_id not in ids:
            raise InvalidError("the cursor no longer matches a result: start from the first page")
        boundary = ids.index(cursor.row_id)
        if cursor.forward:
            start, end = boundary + 1, boundary + 1 + limit
        else:
            start, end = max(boundary - limit, 0), boundary
    chunk = ordered[start:end]

    def at(group: _Group, forward: bool) -> Cursor:
        return Cursor(sort, None, str(group.feature.id), forward)

    next_cursor = at(chunk[-1], True) if chunk and end < len(ordered) else None
    previous_cursor = at(chunk[0], False) if chunk and start > 0 else None
    return chunk, next_cursor, previous_cursor
