"""Allotments: a provider carves a child grant out of its own entitlement
(``services/allotments.py`` has the rules).

``POST /v1/entitlements/{id}/allotments`` creates the child entitlement (201; a
retry with the same ``idempotency_key`` answers the same child, 200, carving
nothing more); 409 when more is asked than the parent has remaining.
``GET /v1/entitlements/{id}/allotments`` lists the children, with the parent's
``allotted`` (what its live children hold) and real-time ``remaining``.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from meterd.api.auth import RuntimeDep, require
from meterd.api.entitlements import EntitlementOut, get_entitlement
from meterd.api.exact_json import ExactJSONRoute
from meterd.api.inputs import PositiveQuantityText, RequestBody
from meterd.core.domain import CUSTOMER_ID_MAX, PRINTABLE_PATTERN
from meterd.core.quantity import format_optional_quantity, format_quantity
from meterd.core.timeutil import isoformat, utcnow
from meterd.services.api_keys import Permission, Principal

router = APIRouter(prefix="/v1", tags=["entitlements"], route_class=ExactJSONRoute)

Viewer = Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_VIEW))]
Manager = Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_MANAGE))]


class AllotmentIn(RequestBody):
    customer_id: str = Field(min_length=1, max_length=CUSTOMER_ID_MAX, pattern=PRINTABLE_PATTERN)
    quantity: PositiveQuantityText = Field(
        description="carved from the parent's current period (and its renewals)"
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="a retry with it answers the same child and carves nothing more",
    )


class AllotmentOut(BaseModel):
    id: uuid.UUID
    entitlement_id: uuid.UUID = Field(description="the child entitlement")
    customer_id: str
    quantity: str
    status: str = Field(description="the child's recorded status")
    idempotency_key: str | None
    created_at: str


class AllotmentList(BaseModel):
    parent_id: uuid.UUID
    allotted: str = Field(description="what the live (not TERMINATED) children hold")
    remaining: str | None = Field(description="the parent's, real time (null: unlimited)")
    results: list[AllotmentOut]


@router.post(
    "/entitlements/{entitlement_id}/allotments", status_code=201, response_model=EntitlementOut
)
def allot(
    entitlement_id: uuid.UUID,
    body: AllotmentIn,
    response: Response,
    runtime: RuntimeDep,
    caller: Manager,
) -> EntitlementOut:
    """Carve ``quantity`` out of this entitlement into a child entitlement of
    ``customer_id``: same feature, term, end and grace, ``parent_id`` set. The
    parent's limit drops by it at once (ingest, reserve and holds included); 409
    when more is asked than it has remaining (limit less consumed and held, real
    time), or when it is not ACTIVE."""
    runtime.queries.owned(caller.org, entitlement_id)
    result = runtime.allotments.allot(
        caller.org,
        entitlement_id,
        body.customer_id,
        Decimal(body.quantity),
        utcnow(),
        idempotency_key=body.idempotency_key,
    )
    if not result.created:
        response.status_code = 200
    return get_entitlement(result.child.id, runtime, caller)


@router.get("/entitlements/{entitlement_id}/allotments", response_model=AllotmentList)
def list_allotments(
    entitlement_id: uuid.UUID, runtime: RuntimeDep, caller: Viewer
) -> AllotmentList:
    """The children, oldest first, with the parent's ``allotted`` and ``remaining``."""
    _, _, balance = runtime.queries.get(caller.org, entitlement_id, utcnow())
    rows = runtime.allotments.children(caller.org, entitlement_id)
    allotted = runtime.allotments.allotted([entitlement_id]).get(entitlement_id, Decimal(0))
    return AllotmentList(
        parent_id=entitlement_id,
        allotted=format_quantity(allotted),
        remaining=format_optional_quantity(balance.remaining),
        results=[
            AllotmentOut(
                id=row.id,
                entitlement_id=row.child_id,
                customer_id=row.customer_id,
                quantity=format_quantity(row.quantity),
                status=row.status,
                idempotency_key=row.idempotency_key,
                created_at=isoformat(row.created_at),
            )
            for row in rows
        ],
    )
