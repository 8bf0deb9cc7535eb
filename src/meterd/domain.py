"""Domain vocabulary shared by every layer: statuses, outcomes, entitlements.

Nothing here imports Redis, SQLAlchemy or Celery.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

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


@dataclass(frozen=True, slots=True)
class Period:
    """One usage period of an entitlement: ``[start, end)``; ``end`` None = open."""

    start: datetime
    end: datetime | None
    quantity: Decimal | None  # None = unlimited


@dataclass(frozen=True, slots=True)
class EntitlementView:
    """What the counter store needs to know to route usage to an entitlement."""

    id: uuid.UUID
    number: int
    priority: int
    status: Status
    billing_type: BillingType
    quantity: Decimal | None
    starts_at: datetime
    ends_at: datetime | None
    grace_until: datetime | None
    periods: tuple[Period, ...] = field(default=())

    @property
    def usable_until(self) -> datetime | None:
        """Usage counts up to here: the end of grace, else the end of the term."""
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
    quantity: Decimal | None
    consumed: Decimal
    #: The split of ``consumed`` between the database and Redis; None when the read
    #: came from Redis's running totals alone (``BalanceService.live``).
    flushed: Decimal | None
    pending: Decimal | None
    state: EffectiveState = EffectiveState.ACTIVE
    #: Usage at this instant would count on it (inside its window, not suspended).
    usable: bool = True

    @property
    def remaining(self) -> Decimal | None:
        if self.quantity is None:
            return None
        return max(self.quantity - self.consumed, Decimal(0)).quantize(_MICRO)

    @property
    def overage(self) -> Decimal:
        if self.quantity is None:
            return Decimal(0).quantize(_MICRO)
        return max(self.consumed - self.quantity, Decimal(0)).quantize(_MICRO)
