"""Webhook endpoints (several per org) and the delivery log: one delivery per
(notification, endpoint), and its attempts (the first and the latest 19 kept).

A notification of the outbox (``entitlements.Notification``) fans out to the
endpoints its org has when it is first delivered: one ``WebhookDelivery`` each,
with its own attempts, backoff and outcome. The notification row's ``due_at``
is the earliest of its pending deliveries', so the dispatcher stays as it was.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from meterd.storage.models.base import Base, UtcDateTime


class WebhookEndpoint(Base):
    """Where an org's notifications are POSTed, signed with ``secret`` (Standard
    Webhooks: ``whsec_`` + base64 of the HMAC key). Removing one sets ``deleted_at``:
    its deliveries stay listed."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_org", "org_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class WebhookDelivery(Base):
    """One notification to one endpoint. ``status``: pending, delivered, failed (given
    up after the last attempt) or cancelled (the endpoint was removed first);
    ``attempts`` counts the calls since it was last queued (a redelivery starts
    again from 0; the attempt rows number every call, and keep the first and the
    latest: ``storage.webhooks.KEPT_ATTEMPTS``)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("notification_id", "endpoint_id", name="uq_webhook_deliveries"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    notification_id: Mapped[str] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoints.id"))
    org_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class WebhookAttempt(Base):
    """One call of an endpoint: when, the HTTP status or why there was none (a refused
    target included), and how long it took."""

    __tablename__ = "webhook_attempts"

    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    #: 1, 2, ... over the delivery's whole life (redeliveries included).
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)
