"""``GET /v1/customers``: the org's customers (the ids its entitlements name), by
id prefix and cursor pages, each with how many entitlements it holds: the
console's customer list. A customer's balances are
``GET /v1/customers/{customer_id}/features/{feature}`` (``meterd.api.usage``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from meterd.api.auth import RuntimeDep, require
from meterd.api.exact_json import ExactJSONRoute
from meterd.core.domain import CUSTOMER_ID_MAX, PRINTABLE_PATTERN
from meterd.services.api_keys import Permission, Principal
from meterd.services.customers import MAX_CUSTOMERS_PAGE

router = APIRouter(prefix="/v1", tags=["customers"], route_class=ExactJSONRoute)

Viewer = Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_VIEW))]


class CustomerOut(BaseModel):
    customer_id: str
    entitlements: int = Field(description="entitlements naming it, whatever their state")


class CustomerPageOut(BaseModel):
    data: list[CustomerOut]
    next: str | None = Field(description="the cursor of the next page; null: the last page")


@router.get("/customers", response_model=CustomerPageOut)
def list_customers(
    runtime: RuntimeDep,
    caller: Viewer,
    prefix: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=CUSTOMER_ID_MAX,
            pattern=PRINTABLE_PATTERN,
            description="only ids starting with it (case-sensitive)",
        ),
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=2000, description="a next value this route gave")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_CUSTOMERS_PAGE)] = 50,
) -> CustomerPageOut:
    """The org's customers in id order: every customer id at least one of its
    entitlements names, with their count. Pages by opaque cursor (``next``)."""
    page = runtime.customers.page(caller.org, prefix=prefix, cursor=cursor, limit=limit)
    return CustomerPageOut(
        data=[
            CustomerOut(customer_id=c.customer_id, entitlements=c.entitlements)
            for c in page.customers
        ],
        next=page.next,
    )
