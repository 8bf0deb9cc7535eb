"""SQLAlchemy 2.x tables. Alembic migrations in ``meterd/migrations`` create them.

Quantities are exact: ``Numeric(38, 6)`` on PostgreSQL; on SQLite, whose
NUMERIC affinity would turn them into doubles, integer micro-units. The
``ExactDecimal`` type hides the difference: Python always sees ``Decimal``.
Entitlement rows are never deleted (they are terminated), so usage periods
and the audit trail always have their parent.
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
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeEngine

from meterd.quantity import from_micros, to_micros
from meterd.storage.exact import decode_micros, encode_micros
from meterd.timeutil import as_utc

#: The longest id the event log holds: an event id (512, ``events.MAX_ID_LENGTH``),
#: U+001F and a feature key (64) for a raw event's item; a reservation's
#: ``<n>:<customer>:<feature>:<idempotency key>`` is at most 398 (migration 0012).
LOGGED_ID_LENGTH = 600


class ExactDecimal(TypeDecorator[Decimal]):
    """Decimal with six fractional digits, stored exactly on every backend:
    ``Numeric(38, 6)`` on PostgreSQL, a 16-byte offset-binary BLOB of micro-units
    on SQLite (``storage/exact.py``; the column is declared BIGINT there, and
    SQLite keeps a BLOB as it is, whatever the column's declared type)."""

    impl = Numeric(38, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(38, 6, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return encode_micros(to_micros(Decimal(value)))
        return Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return from_micros(decode_micros(value))
        return Decimal(value).quantize(Decimal("0.000001"))


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC-aware ones")
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return as_utc(value) if value is not None else None


class Base(DeclarativeBase):
    pass


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    last_entitlement_number: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: Where notifications are POSTed (None: no webhook), and the HMAC key that signs them.
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(200), nullable=True)


class Feature(Base):
    __tablename__ = "features"
    __table_args__ = (UniqueConstraint("org_id", "key", name="uq_features_org_key"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[str] = mapped_column(String(32))
    units: Mapped[str] = mapped_column(String(64), default="")
    product_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: Fractional digits counted (0-6): counters hold integers of 10^-scale units.
    #: Fixed at creation (the counters' units depend on it).
    scale: Mapped[int] = mapped_column(Integer, default=6, server_default=text("6"))
    #: ``domain.Aggregation``; fixed at creation.
    aggregation: Mapped[str] = mapped_column(String(16), default="SUM", server_default="SUM")
    #: The meter over raw events (``meterd.meters``): the CloudEvents ``type`` it reads,
    #: the ``data`` property holding the value (dotted path; None for COUNT), and
    #: equality filters on other properties. No event type: only ``meterd.usage``
    #: events naming the feature feed it.
    event_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    value_property: Mapped[str | None] = mapped_column(String(200), nullable=True)
    meter_filters: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


#: Renewing entitlements recorded EXPIRED or GRACE: the lifecycle job settles them.
LAPSED_RENEWING_SQL = (
    "status IN ('EXPIRED', 'GRACE') AND auto_renew AND contract_mode <> 'TRIAL' "
    "AND term_anchor IS NOT NULL AND billing_type = 'PRE_PAID'"
)


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
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("entitlements.id"), nullable=True
    )
    allotment: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: PAY_PER_USE: the start of the next calendar month to open (None: nothing to open).
    next_period_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    #: The term an auto-renewing entitlement renews by (``meterd.terms.Term``): calendar
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
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    entitlement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entitlements.id"))
    period_start: Mapped[datetime] = mapped_column(UtcDateTime())
    period_end: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    quantity: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    consumed: Mapped[Decimal] = mapped_column(ExactDecimal(), default=Decimal(0))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


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


class Notification(Base):
    """One notification (see ``meterd.notifications``) and where its delivery stands.

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


class ApiKey(Base):
    """An API key: scoped to one org, with permissions; only a hash of it is stored."""

    __tablename__ = "api_keys"

    #: The public part of the key (``mk_<id>_<secret>``), used to find the row.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    #: SHA-256 of the whole key: keys carry 192 random bits, so a fast hash is enough.
    secret_hash: Mapped[str] = mapped_column(String(64))
    #: Space-separated permissions, e.g. "ENTITLEMENTS:VIEW EVENTS:WRITE".
    permissions: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    #: After this moment the key is refused (401); None: never.
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    #: When the key last authenticated, written at most once a minute per process.
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    #: Requests a second (token bucket refill); None: ``METERD_API_RATE_LIMIT``; 0: unlimited.
    rate_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Bucket size; None: ``METERD_API_BURST``, else twice the rate.
    rate_burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: The key this one replaced (``meterd keys rotate``).
    rotated_from: Mapped[str | None] = mapped_column(String(32), nullable=True)


plan_family_links = Table(
    "plan_family_links",
    Base.metadata,
    Column("plan_id", Uuid, ForeignKey("plans.id"), primary_key=True),
    Column("family_id", Uuid, ForeignKey("plan_families.id"), primary_key=True),
)


class PlanFamily(Base):
    """A grouping of plans (e.g. "gold", "legacy"); a plan may belong to several."""

    __tablename__ = "plan_families"
    __table_args__ = (UniqueConstraint("org_id", "key", name="uq_plan_families_org_key"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    key: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    sort_order: Mapped[int] = mapped_column(Integer, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)


class Plan(Base):
    """A template for entitlements: feature, quantity, term, grace, renewal, billing.

    ``term_kind`` and ``condition_family`` are derived from the other fields when
    the plan is written (see ``meterd.plans``), so lists can filter on them.
    """

    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("org_id", "key", name="uq_plans_org_key"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    key: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    feature_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("features.id"))
    quantity: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    billing_type: Mapped[str] = mapped_column(String(16))
    contract_mode: Mapped[str] = mapped_column(String(16))
    term_value: Mapped[int | None] = mapped_column(Integer, nullable=True)
    term_unit: Mapped[str | None] = mapped_column(String(8), nullable=True)
    term_kind: Mapped[int] = mapped_column(Integer)
    condition_family: Mapped[int] = mapped_column(Integer)
    grace_days: Mapped[int] = mapped_column(Integer, default=0)
    auto_renew: Mapped[bool] = mapped_column(Boolean, default=False)
    renewal_quantity: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    families: Mapped[list[PlanFamily]] = relationship(
        secondary=plan_family_links, lazy="selectin", order_by=PlanFamily.sort_order
    )
