"""What a backfill writes: the audit row of each import, the batches it applied,
and the log of the events it counted, kept apart from the partitioned event log.

``event_log_backfill`` is a plain table (never partitioned): the hourly retention
job (``EventLog.maintain``) drops ``event_log``'s day partitions past
``METERD_EVENT_RETENTION`` and never looks at it, so a backfilled event is kept,
and found by dedupe, for as long as the database keeps it. Its primary key
leads with the event's identity (org, source, id), the index the dedupe search
uses; a row per part, like ``event_log``.

``backfill_latest`` and ``backfill_unique_values`` keep what a LATEST or
UNIQUE_COUNT period's figure depends on beyond itself (its latest sample, the
values it counted), for the periods only the backfill ever counts (they ended
before their grant was created less the late window: no live event could
reach them), so its history is counted there exactly, batch after batch.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from meterd.storage.models.base import Base, ExactDecimal, UtcDateTime
from meterd.storage.models.event_rows import LOGGED_ID_LENGTH


class Backfill(Base):
    """One import (``meterd import``) or one ``POST /v1/events?backfill=true``: who,
    when, how many. The counts grow as its batches are applied."""

    __tablename__ = "backfills"
    __table_args__ = (Index("ix_backfills_org_created", "org_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    #: Who asked: ``key:<api key id>`` (the API) or ``cli:<os user>`` (``meterd import``).
    actor: Mapped[str] = mapped_column(String(200))
    #: ``api`` or ``cli``.
    via: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: Events received (the API: at the request; the CLI: as the file is read).
    events: Mapped[int] = mapped_column(BigInteger, default=0)
    accepted: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, default=0)
    dead_lettered: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Of ``accepted``, those counted through the live path (a period still open).
    live: Mapped[int] = mapped_column(BigInteger, default=0)


class BackfillBatch(Base):
    """One applied batch of a backfill: its primary key makes a redelivered batch
    (a task run twice) add its counts once."""

    __tablename__ = "backfill_batches"

    backfill_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    batch_no: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(UtcDateTime())


class BackfillLogRow(Base):
    """One backfilled event, or one part of it (the burn-down split it). A row with
    ``counted_live`` was counted through the live path (its period was still open
    in Redis; its parts are in ``event_log`` through the flush): it is the event's
    identity for dedupe past the log's retention, with no entitlement of its own."""

    __tablename__ = "event_log_backfill"
    __table_args__ = (
        Index("ix_event_log_backfill_customer_time", "org_id", "customer_id", "event_time"),
        Index("ix_event_log_backfill_backfill", "backfill_id"),
    )

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(512), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(LOGGED_ID_LENGTH), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_time: Mapped[datetime] = mapped_column(UtcDateTime())
    customer_id: Mapped[str] = mapped_column(String(128))
    feature: Mapped[str] = mapped_column(String(64))
    entitlement_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    period_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal())
    event_quantity: Mapped[Decimal] = mapped_column(ExactDecimal())
    target_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    data: Mapped[Any] = mapped_column(JSON, nullable=True)
    backfill_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    counted_live: Mapped[bool] = mapped_column(Boolean, default=False)


#: ``event_key``: "<org>:<len>:<source>:<id>".
EVENT_KEY_LENGTH = 64 + 12 + 512 + LOGGED_ID_LENGTH


class BackfillLatest(Base):
    """The latest sample (by time, then event key, as ``ingest.lua`` judges) a LATEST
    period counted only by the backfill took."""

    __tablename__ = "backfill_latest"

    entitlement_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    event_time: Mapped[datetime] = mapped_column(UtcDateTime())
    event_key: Mapped[str] = mapped_column(String(EVENT_KEY_LENGTH))


class BackfillUniqueValue(Base):
    """A value a UNIQUE_COUNT period counted only by the backfill holds (the set
    ``ingest.lua`` keeps in Redis for a live period): keyed by its SHA-256, as a
    value may be longer than an index entry."""

    __tablename__ = "backfill_unique_values"

    entitlement_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
