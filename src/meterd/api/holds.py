"""Hold routes: show, settle and release a hold (docs/holds.md). A hold is made
by the reserve route with ``hold_seconds``."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, Field

from meterd.api.auth import (
    KEY_SECURITY,
    Caller,
    RuntimeDep,
    in_worker,
    require,
    require_admitted_in_route,
)
from meterd.api.exact_json import ExactJSONRoute, model_response
from meterd.api.hold_values import HoldOut, hold_out
from meterd.api.inputs import QuantityText, RequestBody
from meterd.core.timeutil import utcnow
from meterd.services.api_keys import Permission, Principal

router = APIRouter(prefix="/v1/holds", tags=["holds"], route_class=ExactJSONRoute)
Reserver = Annotated[Principal, Depends(require(Permission.USAGE_RESERVE))]
#: The caller of the hot settle route, admitted in its one worker thread (``auth``).
Settler = Annotated[Caller, Depends(require_admitted_in_route(Permission.USAGE_RESERVE))]


class SettleRequest(RequestBody):
    quantity: QuantityText = Field(
        description="what the work used: 0 allowed; more than held counts too (as overage"
        " past the limit)"
    )


class ReleaseRequest(RequestBody):
    """No field: a release names its hold in the path (a field sent is refused, as on
    every write route, so a misspelt option is never dropped in silence)."""


class SettleResponse(BaseModel):
    hold: HoldOut
    settled_now: bool = Field(
        description="false: this repeated a settle already made (nothing more counted)"
    )


@router.get("/{hold_id}", response_model=HoldOut)
def get_hold(hold_id: uuid.UUID, runtime: RuntimeDep, caller: Reserver) -> HoldOut:
    """The hold and its status at this instant (past ``expires_at`` unsettled: expired)."""
    return hold_out(runtime.holds.get(caller.org, hold_id, utcnow()))


@router.post("/{hold_id}/settle", response_model=SettleResponse, openapi_extra=KEY_SECURITY)
async def settle_hold(hold_id: uuid.UUID, body: SettleRequest, caller: Settler) -> Response:
    """Consume exactly ``quantity`` once, at the hold's time, and free the rest. A
    retry with the same quantity answers the same; another quantity, or a released
    or expired hold, is a 409 naming why."""

    def work() -> SettleResponse:
        # the take goes in the round trip that reads the hold (``Caller.admit_with``)
        result = caller.runtime.holds.settle(
            caller.org, hold_id, Decimal(body.quantity), utcnow(), gate=caller
        )
        caller.ensure_admitted()
        return SettleResponse.model_construct(
            hold=hold_out(result.hold), settled_now=result.settled_now
        )

    return model_response(await in_worker(work))


@router.post("/{hold_id}/release", response_model=HoldOut)
def release_hold(
    hold_id: uuid.UUID,
    runtime: RuntimeDep,
    caller: Reserver,
    body: ReleaseRequest | None = None,
) -> HoldOut:
    """Give the held units back (again: no change). A settled or expired hold is a 409."""
    return hold_out(runtime.holds.release(caller.org, hold_id, utcnow()))
