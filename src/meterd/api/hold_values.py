"""A hold as the API shows it (the reserve route and the hold routes share it)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from meterd.core.quantity import format_quantity
from meterd.core.timeutil import isoformat
from meterd.services.holds import Hold


class HoldOut(BaseModel):
    id: uuid.UUID
    customer_id: str
    feature: str
    quantity: str = Field(description="units held (exact decimal text)")
    status: str = Field(description="held, settled, released or expired (at the read)")
    created_at: str = Field(description="the hold's time: settled usage counts in its period")
    expires_at: str
    settled_quantity: str | None = None
    ended_at: str | None = None
    entitlement_id: uuid.UUID | None = None


def hold_out(hold: Hold) -> HoldOut:
    """``hold`` as the API shows it (built without validation: every field typed)."""
    return HoldOut.model_construct(
        id=hold.id,
        customer_id=hold.customer_id,
        feature=hold.feature,
        quantity=format_quantity(hold.quantity),
        status=hold.status.value,
        created_at=isoformat(hold.created_at),
        expires_at=isoformat(hold.expires_at),
        settled_quantity=None
        if hold.settled_quantity is None
        else format_quantity(hold.settled_quantity),
        ended_at=None if hold.ended_at is None else isoformat(hold.ended_at),
        entitlement_id=hold.entitlement_id,
    )
