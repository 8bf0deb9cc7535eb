"""Alert rules (issue 23): thresholds an org sets on its entitlements' periods."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from meterd.storage.models.base import Base, ExactDecimal, UtcDateTime


class AlertRule(Base):
    """One rule: a scope (the whole org, a feature, a customer or an entitlement), a
    kind (``PERCENT``, ``REMAINING``, ``CONSUMED``) and a threshold. A deleted rule
    keeps its row (``deleted_at``): a crossing recorded before the delete still
    names it when the flush notifies it."""

    __tablename__ = "alert_rules"
    __table_args__ = (Index("ix_alert_rules_org", "org_id", "deleted_at"),)

    #: Short (it travels in every resolution entry and crossing field): ``ar_`` + hex.
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    #: At most one of these is set; none: the whole org.
    feature: Mapped[str | None] = mapped_column(String(64), nullable=True)
    customer_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    entitlement_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    threshold: Mapped[Decimal] = mapped_column(ExactDecimal())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
