"""Allotments (issue 23): a parent entitlement's grant carved into a child's."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from meterd.storage.models.base import Base, ExactDecimal, UtcDateTime


class Allotment(Base):
    """One carve: ``quantity`` taken from the parent's current period (and from its
    renewal quantity, when it renews) and granted to ``child_id``, made in the
    transaction that created the child. A retried request with the same
    ``idempotency_key`` finds this row and answers the same child."""

    __tablename__ = "allotments"
    __table_args__ = (
        UniqueConstraint("parent_id", "idempotency_key", name="uq_allotments_key"),
        Index("ix_allotments_parent", "parent_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    parent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entitlements.id"))
    child_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entitlements.id"))
    customer_id: Mapped[str] = mapped_column(String(128))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal())
    #: None: not retried safely (each call carves again).
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
