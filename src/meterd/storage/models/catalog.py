"""The catalog's tables: organisations, features (and their meters), plans and
plan families, and API keys."""

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
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from meterd.storage.models.base import Base, ExactDecimal, UtcDateTime


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    last_entitlement_number: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: No longer read: migration 0015 made each org webhook a ``webhook_endpoints`` row
    #: and cleared these (see ``models/webhooks``).
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
    #: The meter over raw events (``meterd.core.meters``): the CloudEvents ``type`` it reads,
    #: the ``data`` property holding the value (dotted path; None for COUNT), and
    #: equality filters on other properties. No event type: only ``meterd.usage``
    #: events naming the feature feed it.
    event_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    value_property: Mapped[str | None] = mapped_column(String(200), nullable=True)
    meter_filters: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


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
    the plan is written (see ``meterd.core.plans``), so lists can filter on them.
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
    #: Rollover of the plan's entitlements (meterd.core.rollover); None reads as 0.
    rollover_max: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    rollover_min: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    families: Mapped[list[PlanFamily]] = relationship(
        secondary=plan_family_links, lazy="selectin", order_by=PlanFamily.sort_order
    )
