"""Reserve: a synchronous, atomic check-and-consume against the customer's quantity.

A reservation is counted by the same Lua script as usage events, in strict
mode: it takes room from the customer's entitlements in burn-down order and is
refused whole if that room does not cover it, so a PRE_PAID entitlement is
never taken over its quantity, however many callers race (Redis runs the script
atomically).

The idempotency key is scoped to (org, customer, feature): the same key for
another customer or feature is another reservation. A retried call with the
same key and the same quantity (and target) is answered from the marker and
consumes nothing more (``already_granted``); the same key with another
quantity or target is a conflict (409), never a grant. A refused call leaves
no marker, so a retry is judged afresh.

Through a database outage reserve answers from Redis: the customer's
resolution data is there, and the feature's meter is kept in the process
(``MeterCatalog.meter``: a meter never changes, so a kept one is right however
old). It needs the database only for a feature the process has not read, a
customer not cached in Redis, and a retried key whose grant was flushed (the
event log tells ``already_granted`` from a conflict).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from meterd.core.errors import ConflictError, InvalidError
from meterd.core.events import UsageEvent, shape_problem
from meterd.core.quantity import parse_quantity, to_units
from meterd.services.counting import UsageCounter
from meterd.services.meters import MeterCatalog
from meterd.storage.counters import ScriptCode

RESERVE_SOURCE = "meterd.reserve"


class ReservationConflictError(ConflictError):
    """The idempotency key was granted before for another quantity or entitlement."""


def conflict(request: Reservation) -> ReservationConflictError:
    """The error of a key granted before for other parameters."""
    return ReservationConflictError(
        f"idempotency key {request.idempotency_key!r} was granted for another "
        f"quantity or entitlement of {request.customer_id!r} / {request.feature!r}; "
        "a retry must ask exactly the same, a new reservation needs a new key"
    )


def marker_id(customer_id: str, feature: str, idempotency_key: str) -> str:
    """The dedupe id of a reservation: the key within its customer and feature (the
    customer id is length-prefixed, feature keys have no colon: no two collide)."""
    return f"{len(customer_id)}:{customer_id}:{feature}:{idempotency_key}"


class ReserveOutcome(StrEnum):
    GRANTED = "granted"
    #: The same idempotency key was granted before; nothing more was consumed.
    ALREADY_GRANTED = "already_granted"
    DENIED = "denied"
    NO_ENTITLEMENT = "no_entitlement"
    SUSPENDED = "suspended"

    @property
    def granted(self) -> bool:
        return self in (ReserveOutcome.GRANTED, ReserveOutcome.ALREADY_GRANTED)


#: The outcome of each code a strict count can answer (a reservation is never late:
#: it is timed now).
OUTCOMES: dict[ScriptCode, ReserveOutcome] = {
    ScriptCode.ACCEPTED: ReserveOutcome.GRANTED,
    ScriptCode.DUPLICATE: ReserveOutcome.ALREADY_GRANTED,
    ScriptCode.NO_ROOM: ReserveOutcome.DENIED,
    #: The counter cannot hold more exactly: nothing can be granted.
    ScriptCode.OUT_OF_RANGE: ReserveOutcome.DENIED,
    ScriptCode.NO_ENTITLEMENT: ReserveOutcome.NO_ENTITLEMENT,
    ScriptCode.SUSPENDED: ReserveOutcome.SUSPENDED,
}


@dataclass(frozen=True, slots=True)
class Reservation:
    org: str
    customer_id: str
    feature: str
    quantity: Decimal
    idempotency_key: str
    entitlement_id: uuid.UUID | None = None
    #: Event data the grants' dimension filters are matched against (``{"model":
    #: "gpt-4o"}``), as a usage event's ``data``; kept in the event log.
    data: Mapping[str, Any] | None = None


class ReserveService:
    def __init__(self, counting: UsageCounter, meters: MeterCatalog) -> None:
        self.counting = counting
        self.meters = meters

    def reserve(self, request: Reservation, now: datetime) -> ReserveOutcome:
        """Reserve on a SUM or COUNT feature (a level or a distinct count cannot be
        taken ahead: refused as invalid). Entitlements with dimension filters take
        it only if its ``data`` matches them, as for a usage event. The idempotency
        key names the reservation: a retry is answered from the first grant
        whatever data it carries."""
        return self.count_strict(self.reservation_event(request, now), now, request)

    def count_strict(
        self, event: UsageEvent, now: datetime, request: Reservation
    ) -> ReserveOutcome:
        """Count a reservation (or a hold: ``event.hold``) in strict mode."""
        (code,) = self.counting.count([event], now, strict=True)
        if code is ScriptCode.CONFLICT:
            raise conflict(request)
        return OUTCOMES[code]

    def reservation_event(self, request: Reservation, now: datetime) -> UsageEvent:
        """The event a reservation counts: checked against the feature's meter (SUM
        or COUNT, within its scale), timed now."""
        quantity = parse_quantity(request.quantity)
        data = dict(request.data) if request.data is not None else {}
        if (problem := shape_problem({"data": data})) is not None:
            raise InvalidError(problem)
        # A kept meter is right whatever its age (meters never change): reserve reads
        # no store but Redis for a feature the process knows, also while the
        # database does not answer. An unknown feature reads the meters again.
        meter = self.meters.meter(request.org, request.feature)
        scale = 6 if meter is None else meter.scale
        if meter is not None and not meter.aggregation.reservable:
            raise InvalidError(
                f"feature {request.feature!r} counts {meter.aggregation.value}: only SUM and"
                " COUNT features can be reserved"
            )
        to_units(quantity, scale)  # more fractional digits than the feature counts: refused
        return UsageEvent(
            org=request.org,
            customer=request.customer_id,
            feature=request.feature,
            source=RESERVE_SOURCE,
            id=marker_id(request.customer_id, request.feature, request.idempotency_key),
            time=now,
            quantity=quantity,
            entitlement_id=request.entitlement_id,
            data=data,
            scale=scale,
        )
