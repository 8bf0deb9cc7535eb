"""Native usage routes: the real-time value, reserve, and HTTP event intake.

Quantities travel as exact decimal strings ("12.5"), never as floats.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
)

from meterd.api.auth import (
    KEY_SECURITY,
    Caller,
    RuntimeDep,
    in_worker,
    require_admitted_in_route,
    require_unless_flag,
)
from meterd.api.exact_json import ExactJSONRoute, loads_exact, model_response
from meterd.api.hold_values import HoldOut, hold_out
from meterd.api.inputs import PositiveQuantityText, RequestBody
from meterd.core.domain import (
    CUSTOMER_ID_MAX,
    FEATURE_KEY_PATTERN,
    PRINTABLE_PATTERN,
    EffectiveState,
)
from meterd.core.errors import InvalidError
from meterd.core.holds import MAX_HOLD_SECONDS, MIN_HOLD_SECONDS
from meterd.core.quantity import (
    format_optional_quantity,
    format_quantity,
)
from meterd.core.timeutil import isoformat, utcnow
from meterd.services.api_keys import Permission, Principal
from meterd.services.balance import RealTimeValue
from meterd.services.intake import EVENTS_PER_MESSAGE, IntakeReport, Publisher
from meterd.services.reserve import Reservation

router = APIRouter(prefix="/v1", tags=["usage"], route_class=ExactJSONRoute)

CustomerId = Annotated[
    str, Path(min_length=1, max_length=CUSTOMER_ID_MAX, pattern=PRINTABLE_PATTERN)
]
FeatureKey = Annotated[str, Path(pattern=FEATURE_KEY_PATTERN.pattern)]
Decimal_ = Annotated[str, StringConstraints(pattern=r"^-?\d+(\.\d+)?$")]

#: Events one ``POST /v1/events`` may carry.
MAX_EVENTS_PER_REQUEST = 10_000


class EntitlementValue(BaseModel):
    entitlement_id: uuid.UUID
    period_start: str
    quantity: Decimal_ | None = Field(description="null: unlimited")
    consumed: Decimal_
    remaining: Decimal_ | None
    overage: Decimal_
    held: Decimal_ = Field(description="units live holds keep (they reduce remaining)")
    allotted: Decimal_ | None = Field(
        default=None,
        description="what its live child entitlements hold (allotments; quantity already"
        " dropped by each carve); null: it never allotted",
    )
    state: EffectiveState
    usable: bool
    filters: dict[str, StrictStr | StrictInt | StrictBool] | None = Field(
        default=None, description="the entitlement's dimensions (null: all usage counts on it)"
    )


class FeatureValue(BaseModel):
    customer_id: str
    feature: str
    has_access: bool = Field(description="usage now would count, within some quantity")
    state: str = Field(description="the state that decides access (see docs)")
    quantity: Decimal_ | None = Field(description="sum over usable entitlements; null: unlimited")
    consumed: Decimal_
    remaining: Decimal_ | None = Field(description="quantity less consumed and held")
    overage: Decimal_
    held: Decimal_ = Field(description="units live holds keep until settled or released")
    allotted: Decimal_ | None = Field(
        default=None,
        description="sum over usable entitlements of what their live children hold;"
        " null: none of them ever allotted",
    )
    entitlements: list[EntitlementValue]


def feature_value(customer_id: str, feature: str, value: RealTimeValue) -> FeatureValue:
    """``value`` as the route shows it (each entitlement with its dimension filters).
    Built without validation (``model_construct``): every field comes typed, each
    quantity from ``format_quantity``."""
    return FeatureValue.model_construct(
        customer_id=customer_id,
        feature=feature,
        has_access=value.has_access,
        state=value.state,
        quantity=format_optional_quantity(value.quantity),
        consumed=format_quantity(value.consumed),
        remaining=format_optional_quantity(value.remaining),
        overage=format_quantity(value.overage),
        held=format_quantity(value.held),
        allotted=format_optional_quantity(value.allotted),
        entitlements=[
            EntitlementValue.model_construct(
                entitlement_id=b.entitlement_id,
                period_start=isoformat(b.period_start),
                quantity=format_optional_quantity(b.quantity),
                consumed=format_quantity(b.consumed),
                remaining=format_optional_quantity(b.remaining),
                overage=format_quantity(b.overage),
                held=format_quantity(b.held),
                allotted=format_optional_quantity(b.allotted),
                state=b.state,
                usable=b.usable,
                filters=dict(b.filters) if b.filters else None,
            )
            for b in value.balances
        ],
    )


@router.get(
    "/customers/{customer_id}/features/{feature}",
    response_model=FeatureValue,
    openapi_extra=KEY_SECURITY,
)
async def get_feature_value(
    customer_id: CustomerId,
    feature: FeatureKey,
    caller: Annotated[Caller, Depends(require_admitted_in_route(Permission.ENTITLEMENTS_VIEW))],
) -> Response:
    """Real-time value: flushed consumption plus what is still pending in Redis."""

    # one worker thread for all that blocks (``auth``: the hot routes' one hop); the
    # read admits the caller in its last round trip to Redis (``balance.Gate``)
    def read() -> RealTimeValue:
        balance = caller.runtime.balance
        value = balance.value(caller.org, customer_id, feature, utcnow(), gate=caller)
        caller.ensure_admitted()
        return value

    value = await in_worker(read)
    return model_response(feature_value(customer_id, feature, value))


#: An idempotency key, in the body or the header: printable ASCII, at most 200
#: (a reservation's log id must fit ``event_log.event_id``).
IDEMPOTENCY_KEY_MAX = 200
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]+$"


class ReserveRequest(RequestBody):
    quantity: PositiveQuantityText = Field(
        description="a positive decimal, at most the feature's scale of fractional digits"
        " (6 at most): a string or a JSON number, read exactly as written"
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="or the Idempotency-Key header; a retry with it consumes nothing more",
    )
    entitlement_id: uuid.UUID | None = None
    data: dict[str, Any] | None = Field(
        default=None,
        description="event data matched against the dimension filters of the customer's"
        ' entitlements (`{"model": "gpt-4o"}`), as a usage event\'s `data`; an entitlement'
        " with filters takes the reservation only if the data matches them",
    )
    hold_seconds: int | None = Field(
        default=None,
        ge=MIN_HOLD_SECONDS,
        le=MAX_HOLD_SECONDS,
        strict=True,
        description="hold the units this long instead of consuming them: settle what was"
        " used (`POST /v1/holds/{id}/settle`) or release them; unsettled, they are freed"
        " at `expires_at`",
    )


class ReserveResponse(BaseModel):
    granted: bool
    outcome: str = Field(
        description="granted, already_granted, denied, no_entitlement or suspended"
    )
    quantity: Decimal_
    value: FeatureValue
    hold: HoldOut | None = Field(
        default=None, description="the hold, when hold_seconds was asked and it was granted"
    )


@router.post(
    "/customers/{customer_id}/features/{feature}/reserve",
    response_model=ReserveResponse,
    openapi_extra=KEY_SECURITY,
)
async def reserve(
    customer_id: CustomerId,
    feature: FeatureKey,
    body: ReserveRequest,
    caller: Annotated[Caller, Depends(require_admitted_in_route(Permission.USAGE_RESERVE))],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=IDEMPOTENCY_KEY_MAX,
            pattern=IDEMPOTENCY_KEY_PATTERN,
        ),
    ] = None,
) -> Response:
    """Atomic check-and-consume: granted only if the customer's room covers the
    quantity; never takes a PRE_PAID entitlement over its quantity."""
    key = body.idempotency_key or idempotency_key

    # one worker thread for all that blocks (``auth``: the hot routes' one hop)
    def work() -> ReserveResponse:
        caller.admit()
        runtime = caller.runtime
        if not key:
            raise InvalidError("an idempotency key is required (body or Idempotency-Key header)")
        now = utcnow()
        request = Reservation(
            org=caller.org,
            customer_id=customer_id,
            feature=feature,
            quantity=Decimal(body.quantity),
            idempotency_key=key,
            entitlement_id=body.entitlement_id,
            data=body.data,
        )
        hold = None
        if body.hold_seconds is None:
            outcome = runtime.reserve.reserve(request, now)
        else:
            held = runtime.holds.hold(request, body.hold_seconds, now)
            outcome, hold = held.outcome, None if held.hold is None else hold_out(held.hold)
        value = runtime.balance.value(caller.org, customer_id, feature, now)
        return ReserveResponse.model_construct(
            granted=outcome.granted,
            outcome=outcome.value,
            quantity=format_quantity(Decimal(body.quantity)),
            value=feature_value(customer_id, feature, value),
            hold=hold,
        )

    return model_response(await in_worker(work))


class EventResult(BaseModel):
    index: int
    id: str | None
    status: str = Field(description="queued, or not: invalid or late (dead-lettered)")
    reason: str | None = None


class EventsAccepted(BaseModel):
    queued: int
    invalid: int = Field(description="events not queued (invalid or late)")
    results: list[EventResult]
    backfill_id: str | None = Field(
        default=None, description="with ?backfill=true: the backfill's audit record"
    )


EventsCaller = Annotated[
    tuple[Principal, bool],
    Depends(require_unless_flag("backfill", Permission.EVENTS_WRITE, Permission.EVENTS_BACKFILL)),
]


@router.post("/events", status_code=202, response_model=EventsAccepted)
async def post_events(
    request: Request,
    runtime: RuntimeDep,
    caller_and_backfill: EventsCaller,
    backfill: Annotated[
        bool,
        Query(
            description="history older than the late window: counted into the periods that"
            " contain each event's time, on the meterd.backfill queue (permission"
            " EVENTS:BACKFILL)"
        ),
    ] = False,
) -> EventsAccepted:
    """One CloudEvent (``application/cloudevents+json`` or JSON) or a batch
    (``application/cloudevents-batch+json`` or a JSON array). Each event is
    validated now: valid ones are queued to ``meterd.ingest_batch`` under the
    key's org, invalid ones are dead-lettered (replayable) and reported. With
    ``?backfill=true`` every event is queued to ``meterd.backfill_batch`` and
    judged there (docs/architecture.md, "Backfill")."""
    caller, backfill = caller_and_backfill
    body = loads_exact(await request.body())
    events = body if isinstance(body, list) else [body]
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise InvalidError(f"at most {MAX_EVENTS_PER_REQUEST} events per request")
    if backfill:
        return await run_in_threadpool(_queue_backfill, request, runtime, caller, events)
    publish: Publisher = request.app.state.publish_events
    # Validation, publishing and dead-lettering block: keep them off the event loop.
    report: IntakeReport = await run_in_threadpool(
        runtime.intake.accept, events, caller.org, utcnow(), publish
    )
    return EventsAccepted(
        queued=report.queued,
        invalid=report.invalid,
        results=[
            EventResult(index=r.index, id=r.id, status=r.status, reason=r.reason)
            for r in report.results
        ],
    )


def _queue_backfill(
    request: Request, runtime: Any, caller: Principal, events: list[Any]
) -> EventsAccepted:
    """Open the backfill's audit row (who, when, how many) and queue its batches;
    an event without ``time`` is stamped now, as on the live path."""
    from meterd.producer import stamp_receive_time

    now = utcnow()
    stamped = stamp_receive_time(events, now)
    backfill_id = runtime.backfill.open(caller.org, f"key:{caller.key_id}", "api", now, len(events))
    publish = request.app.state.publish_backfill
    for batch_no, start in enumerate(range(0, len(stamped), EVENTS_PER_MESSAGE)):
        publish(stamped[start : start + EVENTS_PER_MESSAGE], caller.org, str(backfill_id), batch_no)
    return EventsAccepted(
        queued=len(stamped),
        invalid=0,
        backfill_id=str(backfill_id),
        results=[
            EventResult(index=i, id=_event_id(e), status="queued") for i, e in enumerate(stamped)
        ],
    )


def _event_id(payload: Any) -> str | None:
    value = payload.get("id") if isinstance(payload, dict) else None
    return value if isinstance(value, str) and len(value) <= 512 else None
