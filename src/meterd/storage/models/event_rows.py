"""What the counting path writes: applied flush batches, the event log and its
quarter-hour rollups, and the dead letters of events that were not counted."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from meterd.storage.models.base import Base, ExactDecimal, UtcDateTime

#: The longest id the event log holds: an event id (512, ``events.MAX_ID_LENGTH``),
#: U+001F and a feature key (64) for a raw event's item; a reservation's
#: ``<n>:<customer>:<feature>:<idempotency key>`` is at most 398 (migration 0012).
LOGGED_ID_LENGTH = 600


class FlushBatch(Base):
    """One applied flush batch. Its primary key is what makes a flush exactly-once."""

    __tablename__ = "flush_batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    committed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    periods: Mapped[int] = mapped_column(Integer)
    total: Mapped[Decimal] = mapped_column(ExactDecimal())


class EventLogRow(Base):
    """One accepted event, or one part of it when the burn-down split it across
    entitlements (``part`` 0, 1, ...; ``quantity`` is the part's, ``event_quantity``
    the whole event's). Written by the flush in the transaction that adds the
    counts, so the log and ``usage_periods`` hold the same events.

    PostgreSQL: partitioned by ``event_time``, one partition a day
    (``event_log_pYYYYMMDD``), created ahead and dropped after the retention by
    ``storage.event_log.EventLog.maintain``. The primary key leads with the event's
    identity: it is the index the dedupe search uses (a key on a partitioned table
    must hold the partition column, so ``event_time`` ends it).
    """

    __tablename__ = "event_log"
    __table_args__ = (
        Index("ix_event_log_customer_time", "org_id", "customer_id", "event_time"),
        {"postgresql_partition_by": "RANGE (event_time)"},
    )

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(512), primary_key=True)
    #: An event's id, or an item's (``meters.item_id``: id, U+001F, feature key).
    event_id: Mapped[str] = mapped_column(String(LOGGED_ID_LENGTH), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_time: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    feature: Mapped[str] = mapped_column(String(64))
    entitlement_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    period_start: Mapped[datetime] = mapped_column(UtcDateTime())
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal())
    event_quantity: Mapped[Decimal] = mapped_column(ExactDecimal())
    #: The entitlement the event asked for (``data.entitlement_id``), if any.
    target_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: The event's ``data`` (part 0 only; the other parts repeat nothing).
    data: Mapped[Any] = mapped_column(JSON, nullable=True)
    batch_id: Mapped[str] = mapped_column(String(64))


def compared_in_schema(name: str | None, type_: str, parent_names: Any) -> bool:
    """For Alembic's comparison: the log's day partitions (and their indexes) are
    created at run time, not by migrations."""
    partition = type_ in ("table", "index") and (name or "").startswith("event_log_p")
    return not partition


class UsageRollup(Base):
    """Usage per entitlement per quarter hour of event time, maintained by the flush
    with the log (quarter hours: every time zone's hours, days and months are whole
    sums of them, India's +05:30 and Nepal's +05:45 included)."""

    __tablename__ = "usage_rollups"
    __table_args__ = (
        Index("ix_usage_rollups_customer", "org_id", "customer_id", "feature", "bucket_start"),
    )

    entitlement_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(128))
    feature: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal())
    events: Mapped[int] = mapped_column(BigInteger)


class DeadLetter(Base):
    """An event that was not counted, with why, kept for listing and replay."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        Index("ix_dead_letters_reason_received", "reason", "received_at"),
        Index("ix_dead_letters_org_received", "org_id", "received_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    #: sha256 of (reason, org, source, id) or of the raw payload: a redelivered batch
    #: dead-letters the same event once.
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(512), nullable=True)
    event_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    #: The original event as JSON text (ASCII-escaped: PostgreSQL text refuses NUL).
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    replayed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    replay_outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
