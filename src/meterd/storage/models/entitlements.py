"""Entitlements and what hangs off them: the audit trail of status steps, the
usage periods, and the notifications. Entitlement rows are never deleted (they
are terminated), so usage periods and the audit trail always have their parent.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from meterd.storage.models.base import Base, ExactDecimal, UtcDateTime

#: Renewing entitlements recorded EXPIRED or GRACE: the lifecycle job settles them.
LAPSED_RENEWING_SQL = (
    "status IN ('EXPIRED', 'GRACE') AND auto_renew AND contract_mode <> 'TRIAL' "
    "AND term_anchor IS NOT NULL AND billing_type = 'PRE_PAID'"
)


#: Rolls over (``meterd.core.rollover``): the lifecycle job stores its final carries.
ROLLS_OVER_SQL = "rollover_max IS NOT NULL"
#: A period whose carry is not stored yet (of an entitlement that rolls over, the
#: job's work; of one that does not, never read by it).
CARRY_OPEN_SQL = "rolled_over IS NULL"


#: Voided from an instant (``terminated_at``) but not recorded TERMINATED yet: a void
#: scheduled ahead, which the lifecycle job records when its instant comes.
VOID_DUE_SQL = "terminated_at IS NOT NULL AND status <> 'TERMINATED'"


class Entitlement(Base):
    __tablename__ = "entitlements"
    __table_args__ = (
        UniqueConstraint("org_id", "number", name="uq_entitlements_org_number"),
        Index("ix_entitlements_resolution", "org_id", "customer_id", "feature_id"),
        # The lifecycle job's three "due" queries, each an index range scan.
        Index("ix_entitlements_status_starts", "status", "starts_at"),
        Index("ix_entitlements_status_ends", "status", "ends_at"),
        Index("ix_entitlements_status_grace", "status", "grace_until"),
        # Only PAY_PER_USE rows that can still open a month are in it.
        Index(
            "ix_entitlements_next_period",
            "next_period_at",
            postgresql_where=text("next_period_at IS NOT NULL"),
            sqlite_where=text("next_period_at IS NOT NULL"),
        ),
        # Only renewing rows recorded as lapsed are in it (none, once the job ran).
        Index(
            "ix_entitlements_lapsed_renewing",
            "status",
            postgresql_where=text(LAPSED_RENEWING_SQL),
            sqlite_where=text(LAPSED_RENEWING_SQL),
        ),
        Index(
            "ix_entitlements_void_due",
            "terminated_at",
            postgresql_where=text(VOID_DUE_SQL),
            sqlite_where=text(VOID_DUE_SQL),
        ),
        # The entitlements that roll over: where the job's finalise query starts.
        Index(
            "ix_entitlements_rollover",
            "id",
            postgresql_where=text(ROLLS_OVER_SQL),
            sqlite_where=text(ROLLS_OVER_SQL),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    number: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[str] = mapped_column(String(128))
    feature_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("features.id"))
    plan_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    contract_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    quantity: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    billing_type: Mapped[str] = mapped_column(String(16))
    contract_mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ends_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    grace_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime())
    auto_renew: Mapped[bool] = mapped_column(Boolean, default=False)
    renewal_quantity: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    #: Rollover (meterd.core.rollover): at most / at least this much of a term's
    #: remaining carries into the renewed term; None reads as 0.
    rollover_max: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    rollover_min: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("entitlements.id"), nullable=True
    )
    allotment: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: PAY_PER_USE: the start of the next calendar month to open (None: nothing to open).
    next_period_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    #: The term an auto-renewing entitlement renews by (``meterd.core.terms.Term``): calendar
    #: months, or an exact duration in microseconds (one of the two; None: no term).
    term_months: Mapped[int | None] = mapped_column(Integer, nullable=True)
    term_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: Term k starts at ``term_anchor + k * term`` (the original start).
    term_anchor: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    #: When an operator terminated it: usage timed before still counts.
    terminated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    #: The tenant page's own fields (faceRecognitionType, serviceBundles, addOn, ...),
    #: a JSON object under the page's names; validated at the API edge. {} for none.
    attributes: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, server_default=text("'{}'")
    )
    #: Dimensions (``domain.Dimensions``): only usage whose event ``data`` has these
    #: property values counts on it, e.g. ``{"model": "gpt-4o"}`` (None: all usage).
    filters: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012


class EntitlementTransition(Base):
    """The audit trail: every status change, when it fell due, why, and which job run."""

    __tablename__ = "entitlement_transitions"
    __table_args__ = (
        # A transition is applied once, however many jobs race for it; led by
        # (entitlement_id, at), the same index lists an entitlement's history in order.
        UniqueConstraint(
            "entitlement_id", "at", "from_status", "to_status", name="uq_transitions_step"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    entitlement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entitlements.id"))
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    reason: Mapped[str] = mapped_column(Text)
    job_run_id: Mapped[str] = mapped_column(String(64))


class UsagePeriod(Base):
    """Flushed consumption of one entitlement in one period."""

    __tablename__ = "usage_periods"
    __table_args__ = (
        UniqueConstraint("entitlement_id", "period_start", name="uq_usage_periods_start"),
        # The finalise query probes it once per entitlement that rolls over: only the
        # periods whose carry is still open, not every period it ever had.
        Index(
            "ix_usage_periods_carry_open",
            "entitlement_id",
            "period_start",
            postgresql_where=text(CARRY_OPEN_SQL),
            sqlite_where=text(CARRY_OPEN_SQL),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    entitlement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entitlements.id"))
    period_start: Mapped[datetime] = mapped_column(UtcDateTime())
    period_end: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    quantity: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    consumed: Mapped[Decimal] = mapped_column(ExactDecimal(), default=Decimal(0))
    #: What this renewed term carried from the term before, once final (that term
    #: closed past the late window); None: nothing carried, or not final yet.
    rolled_over: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Notification(Base):
    """One notification (see ``meterd.core.notifications``) and where its delivery stands.

    It is inserted in the same transaction as what it announces (the flush batch
    that carried a threshold crossing, the lifecycle step), so it exists exactly
    once. ``due_at`` is when the dispatcher should (re)publish it to
    ``meterd.notify``: at creation, after a failed webhook call (backoff), and
    after a lease when a published one never reported back. None: done.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_due", "due_at"),
        Index("ix_notifications_entitlement", "entitlement_id", "occurred_at"),
        #: The delivery log (``GET /v1/notifications``): an org's, newest first.
        Index("ix_notifications_org_created", "org_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    entitlement_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    type: Mapped[str] = mapped_column(String(64))
    #: The payload as JSON text, exactly as published and POSTed.
    payload: Mapped[str] = mapped_column(Text)
    #: When what it announces happened (the payload's ``occurred_at``).
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    delivery: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
