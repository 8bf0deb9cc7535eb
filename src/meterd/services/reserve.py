"""Reserve: a synchronous, atomic check-and-consume against the customer's quantity.

A reservation is counted by the same Lua script as usage events, in strict
mode: it takes room from the customer's entitlements in burn-down order and is
refused whole if that room does not cover it, so a PRE_PAID entitlement is
never taken over its quantity, however many callers race (Redis runs the script
atomically). The idempotency key is the event id under the source
``meterd.reserve``: a retried call with the same key is answered from the
dedupe marker and consumes nothing more. A refused call leaves no marker, so a
retry is judged afresh.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from meterd.events import UsageEvent
from meterd.quantity import parse_quantity, to_micros
from meterd.services.resolution import ResolutionCache
from meterd.storage.counters import MISSING_RESOLUTION, NO_ROOM, CounterStore

RESERVE_SOURCE = "meterd.reserve"
_MAX_RESOLUTION_ROUNDS = 3


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


_CODES = {
    "a": ReserveOutcome.GRANTED,
    "d": ReserveOutcome.ALREADY_GRANTED,
    NO_ROOM: ReserveOutcome.DENIED,
    "n": ReserveOutcome.NO_ENTITLEMENT,
    "s": ReserveOutcome.SUSPENDED,
}


class ReserveError(RuntimeError):
    """The reservation could not be decided now (resolution data kept vanishing)."""


@dataclass(frozen=True, slots=True)
class Reservation:
    org: str
    customer_id: str
    feature: str
    quantity: Decimal
    idempotency_key: str
    entitlement_id: uuid.UUID | None = None


class ReserveService:
    def __init__(self, counters: CounterStore, resolution: ResolutionCache) -> None:
        self.counters = counters
        self.resolution = resolution

    def reserve(self, request: Reservation, now: datetime) -> ReserveOutcome:
        quantity = parse_quantity(request.quantity)
        event = UsageEvent(
            org=request.org,
            customer=request.customer_id,
            feature=request.feature,
            source=RESERVE_SOURCE,
            id=request.idempotency_key,
            time=now,
            quantity_micros=to_micros(quantity),
            entitlement_id=request.entitlement_id,
        )
        for _ in range(_MAX_RESOLUTION_ROUNDS):
            code = self.counters.add_batch([event], now=now, strict=True)
            if code != MISSING_RESOLUTION:
                return _CODES[code]
            self.resolution.fill([(event.org, event.customer, event.feature)], now)
        raise ReserveError("resolution data kept disappearing from Redis; retry")
