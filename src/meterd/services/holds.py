"""Holds: reserve now, settle what was used (docs/holds.md).

``hold`` is a reservation whose units are held until ``expires_at``: counted by
``ingest.lua`` in strict mode like a reservation, atomically with every other
reserve, hold and usage event, so racing callers never take a PRE_PAID
entitlement over its quantity. ``settle`` is the settled quantity counted as a
usage event at the hold's time, on the hold's customer, feature, target and
data, with the hold's units given back in the same atomic step (source
``meterd.hold``, id the hold's id): flushed, logged and correctable like any
usage. ``release`` gives the units back. A hold past its expiry is expired by
time alone (every read and count frees it); ``expire_due`` is a tidy-up.

Holds live in Redis, with the customer's counters: through a database outage a
hold is made, settled and released as a reservation is (a feature the process
knows and a customer cached in Redis need no SQL).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from meterd.core.errors import ConflictError, InvalidError, NotFoundError
from meterd.core.events import UsageEvent
from meterd.core.holds import (
    HOLD_SOURCE,
    MAX_HOLD_SECONDS,
    MIN_HOLD_SECONDS,
    HoldMeta,
    HoldOp,
    HoldStatus,
    hold_id_for,
    status_at,
)
from meterd.core.quantity import from_units, parse_quantity, to_units
from meterd.services.balance import Gate
from meterd.services.counting import UsageCounter
from meterd.services.reserve import (
    OUTCOMES,
    Reservation,
    ReserveOutcome,
    ReserveService,
    conflict,
)
from meterd.storage.counters import ScriptCode
from meterd.storage.holds import HoldStore, StoredHold

#: Live holds one customer may keep (a caller cannot grow Redis without bound), as
#: ingest/holds.lua's MAX_LIVE_HOLDS; a hold's record is kept an hour after it ends.
MAX_LIVE_HOLDS = 10_000


class HoldNotFoundError(NotFoundError):
    """No such hold in this org (never made, or forgotten an hour after it ended)."""


class HoldStateError(ConflictError):
    """The hold cannot do that in its status (settled, released or expired)."""


class TooManyHoldsError(ConflictError):
    """The customer keeps too many live holds."""


@dataclass(frozen=True, slots=True)
class Hold:
    """A hold as the edges show it: its status at the instant of the read."""

    id: uuid.UUID
    customer_id: str
    feature: str
    quantity: Decimal
    status: HoldStatus
    created_at: datetime
    expires_at: datetime
    #: What was settled (settled holds only), and when the hold ended.
    settled_quantity: Decimal | None
    ended_at: datetime | None
    entitlement_id: uuid.UUID | None

    @classmethod
    def of(cls, stored: StoredHold, now: datetime) -> Hold:
        meta = stored.meta
        status = status_at(stored.status, stored.expires_at, now)
        ended = stored.ended_at
        if status is HoldStatus.EXPIRED and ended is None:
            ended = stored.expires_at
        return cls(
            id=stored.id,
            customer_id=meta.customer,
            feature=meta.feature,
            quantity=from_units(stored.units, meta.scale),
            status=status,
            created_at=meta.time,
            expires_at=stored.expires_at,
            settled_quantity=None
            if stored.settled_units is None
            else from_units(stored.settled_units, meta.scale),
            ended_at=ended,
            entitlement_id=meta.target,
        )


@dataclass(frozen=True, slots=True)
class HoldResult:
    outcome: ReserveOutcome
    #: The hold made (or found again by its idempotency key), when granted.
    hold: Hold | None


@dataclass(frozen=True, slots=True)
class SettleResult:
    hold: Hold
    #: False: this call repeated a settle already made (nothing more was counted).
    settled_now: bool


class HoldService:
    def __init__(self, reserve: ReserveService, counting: UsageCounter, holds: HoldStore) -> None:
        self.reserve = reserve
        self.counting = counting
        self.holds = holds
        self.max_live_holds = MAX_LIVE_HOLDS

    def hold(self, request: Reservation, seconds: int, now: datetime) -> HoldResult:
        """Hold ``request.quantity`` for ``seconds`` (1 to 86,400): granted only if the
        customer's room (quantity less consumed and held) covers it."""
        if not MIN_HOLD_SECONDS <= seconds <= MAX_HOLD_SECONDS:
            raise InvalidError(
                f"hold_seconds must be {MIN_HOLD_SECONDS} to {MAX_HOLD_SECONDS}, not {seconds}"
            )
        event = self.reserve.reservation_event(request, now)
        hold_id = hold_id_for(request.org, event.id)
        meta = HoldMeta(
            org=request.org,
            customer=request.customer_id,
            feature=request.feature,
            scale=event.scale,
            time=now,
            target=request.entitlement_id,
            data=dict(event.data),
            idempotency_key=request.idempotency_key,
        )
        expires = now + timedelta(seconds=seconds)
        op = HoldOp("hold", hold_id, expires, meta.encode(), self.max_live_holds)
        (code,) = self.counting.count([replace(event, hold=op)], now, strict=True)
        if code is ScriptCode.CONFLICT:
            raise conflict(request)
        if code is ScriptCode.TOO_MANY_HOLDS:
            raise TooManyHoldsError(
                f"customer {request.customer_id!r} keeps {self.max_live_holds} live holds: settle"
                " or release some first"
            )
        outcome = OUTCOMES[code]
        if outcome is ReserveOutcome.GRANTED:  # made now: no need to read it back
            units = to_units(event.quantity, event.scale)
            made = StoredHold(hold_id, HoldStatus.HELD, units, expires, meta, (), None, None)
            return HoldResult(outcome, Hold.of(made, now))
        if not outcome.granted:
            return HoldResult(outcome, None)
        return HoldResult(outcome, Hold.of(self._stored(request.org, hold_id), now))

    def get(self, org: str, hold_id: uuid.UUID, now: datetime) -> Hold:
        return Hold.of(self._stored(org, hold_id), now)

    def settle(
        self,
        org: str,
        hold_id: uuid.UUID,
        quantity: Decimal,
        now: datetime,
        gate: Gate | None = None,
    ) -> SettleResult:
        """Consume exactly ``quantity`` (0 allowed; more than held counts too, as
        overage past the limit) at the hold's time, once: a retry with the same
        quantity answers the same, another quantity is a conflict. ``gate`` (the
        API's rate limit and permission, ``balance.Gate``): passed first, in the
        round trip that reads the hold."""
        if gate is None:
            stored = self._stored(org, hold_id)
        else:
            command, reply = self.holds.get_command(org, hold_id)
            found = gate.admit_with(self.holds.client, command, reply)
            if found is None:
                raise HoldNotFoundError("hold", hold_id)
            stored = found
        meta = stored.meta
        quantity = Decimal(0) if quantity == 0 else parse_quantity(quantity)
        units = to_units(quantity, meta.scale)
        event = UsageEvent(
            org=org,
            customer=meta.customer,
            feature=meta.feature,
            source=HOLD_SOURCE,
            id=str(hold_id),
            time=meta.time,
            quantity=from_units(units, meta.scale),
            entitlement_id=meta.target,
            data=meta.data,
            scale=meta.scale,
            hold=HoldOp("settle", hold_id),
        )
        (code,) = self.counting.count([event], now)
        if code in (ScriptCode.ACCEPTED, ScriptCode.DUPLICATE):
            # settled with exactly these units, now or by an earlier call
            ended = now if code is ScriptCode.ACCEPTED else (stored.ended_at or now)
            after = replace(stored, status=HoldStatus.SETTLED, settled_units=units, ended_at=ended)
            return SettleResult(Hold.of(after, now), code is ScriptCode.ACCEPTED)
        if code is ScriptCode.CONFLICT:
            after = self._stored(org, hold_id)
            settled = from_units(after.settled_units or 0, meta.scale)
            raise HoldStateError(
                f"hold {hold_id} was settled with {settled}, not {quantity}: a retry must"
                " settle the same quantity"
            )
        if code in (ScriptCode.HOLD_EXPIRED, ScriptCode.HOLD_RELEASED):
            status = "expired" if code is ScriptCode.HOLD_EXPIRED else "released"
            raise HoldStateError(f"hold {hold_id} is {status}: it can no longer be settled")
        if code is ScriptCode.HOLD_MISSING:
            raise HoldNotFoundError("hold", hold_id)
        if code is ScriptCode.OUT_OF_RANGE:
            raise InvalidError(f"settling {quantity} would carry a counter past what it holds")
        # no_entitlement or suspended: the grant the hold was made on no longer takes
        # usage at the hold's time (deleted, or an operator's change since)
        raise HoldStateError(
            f"hold {hold_id} cannot be settled: no entitlement takes its usage ({code.name})"
        )

    def release(self, org: str, hold_id: uuid.UUID, now: datetime) -> Hold:
        """Give the held units back; releasing a released hold again is a no-op."""
        stored = self._stored(org, hold_id)
        status = self.holds.release(stored, now)
        if status is None:
            raise HoldNotFoundError("hold", hold_id)
        if status is not HoldStatus.RELEASED:
            raise HoldStateError(f"hold {hold_id} is {status.value}: it cannot be released")
        return Hold.of(self._stored(org, hold_id), now)

    def expire_due(self, now: datetime) -> int:
        """Free the expired holds of customers nobody read since (a tidy-up)."""
        return self.holds.expire_due(now)

    def _stored(self, org: str, hold_id: uuid.UUID) -> StoredHold:
        stored = self.holds.get(org, hold_id)
        if stored is None:
            raise HoldNotFoundError("hold", hold_id)
        return stored
