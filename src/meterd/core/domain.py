"""Domain vocabulary shared by every layer: statuses, outcomes, entitlements.

Nothing here imports Redis, SQLAlchemy or Celery.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from meterd.core.terms import Term

ORG_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FEATURE_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CUSTOMER_ID_MAX = 128
#: Identifiers and search terms (customer ids, event ids, sources): no control
#: characters. PostgreSQL text refuses NUL, and a newline in an id is never intended.
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
#: Free text (names, descriptions, reasons): anything but NUL.
NO_NUL_PATTERN = r"^[^\x00]*$"
_MICRO = Decimal("0.000001")


class BillingType(StrEnum):
    PRE_PAID = "PRE_PAID"
    PAY_PER_USE = "PAY_PER_USE"


class ContractMode(StrEnum):
    PRODUCTION = "PRODUCTION"
    TRIAL = "TRIAL"


class Status(StrEnum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    GRACE = "GRACE"
    EXPIRED = "EXPIRED"
    SUSPENDED = "SUSPENDED"
    TERMINATED = "TERMINATED"


class EffectiveState(StrEnum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    GRACE = "GRACE"
    EXHAUSTED = "EXHAUSTED"
    EXPIRED = "EXPIRED"
    SUSPENDED = "SUSPENDED"
    TERMINATED = "TERMINATED"


class FeatureType(StrEnum):
    FEATURE = "FEATURE"
    USERS = "USERS"
    TRANSACTIONS = "TRANSACTIONS"
    CREDITS = "CREDITS"
    STORAGE = "STORAGE"


class Outcome(StrEnum):
    """What happened to one usage event. Travels unchanged from the Lua script to
    the dead-letter store, the metrics label and the API response."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    NO_ENTITLEMENT = "no_entitlement"
    LATE = "late"
    SUSPENDED = "suspended"

    @property
    def is_dead_letter(self) -> bool:
        return self not in (Outcome.ACCEPTED, Outcome.DUPLICATE)


class Aggregation(StrEnum):
    """How a feature's events make its consumption in a period (``meterd.core.meters``).

    SUM adds quantities; COUNT counts events; UNIQUE_COUNT counts distinct values
    of a property; MAX keeps the peak value; LATEST the value of the latest event
    by event time. MAX and LATEST are gauges: their consumption is a level, not a
    running total."""

    SUM = "SUM"
    COUNT = "COUNT"
    UNIQUE_COUNT = "UNIQUE_COUNT"
    MAX = "MAX"
    LATEST = "LATEST"

    @property
    def is_gauge(self) -> bool:
        return self in (Aggregation.MAX, Aggregation.LATEST)

    @property
    def reservable(self) -> bool:
        """Only additive aggregations can be reserved ahead (the reserve call)."""
        return self in (Aggregation.SUM, Aggregation.COUNT)


#: A dimension filter: event ``data`` property (dotted path) -> the value it must have.
Dimensions = Mapping[str, str | int | bool]


@dataclass(frozen=True, slots=True)
class Period:
    """One usage period of an entitlement: ``[start, end)``; ``end`` None = open."""

    start: datetime
    end: datetime | None
    quantity: Decimal | None  # None = unlimited
    #: Rollover (``meterd.core.rollover``): what this renewed period carried from the
    #: one before, once final (stored); None: nothing carried, or computed from the
    #: consumptions (``lifecycle.limit_units``).
    rolled_over: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Renewal:
    """How an auto-renewing entitlement renews: term after term from its anchor."""

    anchor: datetime
    term: Term
    #: The quantity of each renewed period (None: unlimited).
    quantity: Decimal | None
    #: Rollover: a renewed term carries MIN(rollover_max, MAX(remaining of the term
    #: before, rollover_min)) on top of ``quantity`` (``meterd.core.rollover``).
    rollover_max: Decimal = Decimal(0)
    rollover_min: Decimal = Decimal(0)

    @property
    def rolls_over(self) -> bool:
        """Whether anything can carry: MIN(rollover_max, ...) is 0 when the max is."""
        return self.rollover_max > 0


#: A suspension: from when, to when (None: still suspended).
Suspension = tuple[datetime, datetime | None]


@dataclass(frozen=True, slots=True)
class EntitlementView:
    """What routing usage to an entitlement, and judging its state at any instant,
    need to know of it (see ``meterd.core.lifecycle.status_at`` and ``period_at``)."""

    id: uuid.UUID
    number: int
    priority: int
    #: As last recorded (by the lifecycle job or an operator); the state at an
    #: instant is ``lifecycle.status_at``, which never waits for the job.
    status: Status
    billing_type: BillingType
    quantity: Decimal | None
    starts_at: datetime
    #: The end of the term as stored: for a renewing entitlement, the end of the
    #: last term the job opened (the current one may be later).
    ends_at: datetime | None
    grace_until: datetime | None
    periods: tuple[Period, ...] = field(default=())
    renewal: Renewal | None = None
    suspensions: tuple[Suspension, ...] = ()
    terminated_at: datetime | None = None
    #: The feature's scale: counters hold integers of 10^-scale units.
    scale: int = 6
    #: Dimensions: only usage whose ``data`` has these values counts on it (None: all).
    filters: Dimensions | None = None
    #: The alert rules that apply to it, each (rule id, kind code, threshold units)
    #: as the resolution entry carries them (``meterd.core.notifications``); None:
    #: its org has no rules (the defaults, 80 % and 100 %).
    alert_rules: tuple[tuple[str, str, int], ...] | None = None
    #: What its live (not TERMINATED) children hold, carved out of it by allotments
    #: (``storage/allotments.py``); None: it never allotted.
    allotted: Decimal | None = None

    @property
    def rolls_over(self) -> bool:
        """Whether a renewed term carries what the term before left
        (``meterd.core.rollover``)."""
        return self.renewal is not None and self.renewal.rolls_over

    @property
    def usable_until(self) -> datetime | None:
        """Usage timed before this counts (None: open): the end of grace, else the end
        of the term; a renewing entitlement never ends, unless terminated."""
        if self.terminated_at is not None:
            end = None if self.renewal else self.grace_until or self.ends_at
            return self.terminated_at if end is None else min(end, self.terminated_at)
        if self.renewal is not None:
            return None
        return self.grace_until or self.ends_at


def effective_state(
    status: Status, billing_type: BillingType, quantity: Decimal | None, consumed: Decimal
) -> EffectiveState:
    """The stored status, refined: a PRE_PAID entitlement that is ACTIVE or in GRACE
    and has consumed its whole quantity is EXHAUSTED (usage still counts, as overage;
    the reserve call refuses it)."""
    exhausted = (
        billing_type is BillingType.PRE_PAID and quantity is not None and consumed >= quantity
    )
    if status in (Status.ACTIVE, Status.GRACE) and exhausted:
        return EffectiveState.EXHAUSTED
    return EffectiveState(status.value)


@dataclass(frozen=True, slots=True)
class Balance:
    """A real-time read of one entitlement's current period."""

    entitlement_id: uuid.UUID
    period_start: datetime
    #: The end of the current period (None: open-ended).
    period_end: datetime | None
    quantity: Decimal | None
    consumed: Decimal
    #: The split of ``consumed`` between the database and Redis; None when the read
    #: came from Redis's running totals alone (``BalanceService.live``).
    flushed: Decimal | None
    pending: Decimal | None
    #: The status at the instant of the read (from the clock, never waiting for a job).
    status: Status = Status.ACTIVE
    #: The end of the current term and of its grace, at the instant of the read (a
    #: renewing entitlement's move with each renewal, recorded or not).
    ends_at: datetime | None = None
    grace_until: datetime | None = None
    state: EffectiveState = EffectiveState.ACTIVE
    #: Usage at this instant would count on it (inside its window, not suspended).
    usable: bool = True
    #: The entitlement's dimensions (None: it takes all usage of its feature).
    filters: Dimensions | None = None
    #: Units live holds keep on this period (not consumed; they take room).
    held: Decimal = Decimal(0)
    #: What the entitlement's live children hold (allotments; its ``quantity``
    #: already dropped by each carve); None: it never allotted.
    allotted: Decimal | None = None

    @property
    def remaining(self) -> Decimal | None:
        """The quantity less what is consumed and held (never below zero)."""
        if self.quantity is None:
            return None
        return max(self.quantity - self.consumed - self.held, Decimal(0)).quantize(_MICRO)

    @property
    def overage(self) -> Decimal:
        if self.quantity is None:
            return Decimal(0).quantize(_MICRO)
        return max(self.consumed - self.quantity, Decimal(0)).quantize(_MICRO)
