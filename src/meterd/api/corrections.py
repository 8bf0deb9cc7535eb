"""Corrections of accepted events: ``POST /v1/events/void`` and ``/v1/events/amend``.

The service (``services/corrections.py``) takes back exactly what the event
counted and, for an amend, counts it again with its new ``data`` at its original
time, exactly once; the answer shows what the correction moved, per entitlement
and period (negative: taken back). 404 if meterd never accepted the event, 409
if it is void already (a second void, or an amend of a voided event).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, StringConstraints

from meterd.api.auth import RuntimeDep, require
from meterd.api.exact_json import ExactJSONRoute
from meterd.api.inputs import RequestBody
from meterd.core.domain import NO_NUL_PATTERN, PRINTABLE_PATTERN
from meterd.core.events import MAX_ID_LENGTH
from meterd.core.quantity import format_quantity
from meterd.core.timeutil import isoformat, utcnow
from meterd.services.api_keys import Permission, Principal
from meterd.services.corrections import Correction

if TYPE_CHECKING:
    from meterd.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["corrections"], route_class=ExactJSONRoute)

Corrector = Annotated[Principal, Depends(require(Permission.EVENTS_CORRECT))]
IdText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=PRINTABLE_PATTERN)
]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=NO_NUL_PATTERN)]


class VoidIn(RequestBody):
    source: IdText
    id: IdText
    reason: Reason = Field(description="why (kept in the event log with who and when)")


class AmendIn(VoidIn):
    data: dict[str, Any] = Field(
        description="the event's new data (a usage event's: feature, quantity, ...)"
    )


class CorrectionPartOut(BaseModel):
    feature: str
    entitlement_id: str
    period_start: str
    quantity: str = Field(description="what this correction moved (negative: taken back)")


class CorrectionOut(BaseModel):
    kind: str = Field(description="void or amend")
    source: str
    id: str
    reason: str
    actor: str = Field(description="who: key:<API key id>:<its name>, or cli")
    at: str
    numbers: list[int] = Field(description="the correction's number for each item corrected")
    parts: list[CorrectionPartOut]
    data: dict[str, Any] | None = Field(default=None, description="an amend's new data")


def correction_out(c: Correction) -> CorrectionOut:
    return CorrectionOut(
        kind=c.kind.value,
        source=c.source,
        id=c.id,
        reason=c.reason,
        actor=c.actor,
        at=isoformat(c.at),
        numbers=list(c.numbers),
        parts=[
            CorrectionPartOut(
                feature=p.feature,
                entitlement_id=str(p.entitlement_id),
                period_start=isoformat(p.period_start),
                quantity=format_quantity(p.quantity),
            )
            for p in c.parts
        ],
        data=dict(c.data) if c.data is not None else None,
    )


def actor_of(runtime: Runtime, caller: Principal) -> str:
    """Who corrects: ``key:<API key id>:<its name>``."""
    return f"key:{caller.key_id}:{runtime.api_keys.get(caller.key_id, caller.org).name}"


@router.post("/events/void", response_model=CorrectionOut)
def void_event(body: VoidIn, runtime: RuntimeDep, caller: Corrector) -> CorrectionOut:
    """Take back every unit the event counted, from the periods it counted on,
    flushed or not, open or closed. 404: never accepted; 409: already void."""
    made = runtime.corrections.void(
        caller.org,
        body.source,
        body.id,
        reason=body.reason,
        actor=actor_of(runtime, caller),
        now=utcnow(),
    )
    return correction_out(made)


@router.post("/events/amend", response_model=CorrectionOut)
def amend_event(body: AmendIn, runtime: RuntimeDep, caller: Corrector) -> CorrectionOut:
    """Count the event as if sent with ``data`` at its original time: its units
    taken back and the new ones counted, in one step. 404: never accepted; 409:
    void; 400: a raw event's items, another feature, or an event older than the
    late window."""
    made = runtime.corrections.amend(
        caller.org,
        body.source,
        body.id,
        body.data,
        reason=body.reason,
        actor=actor_of(runtime, caller),
        now=utcnow(),
    )
    return correction_out(made)
