"""webhook endpoints: several per org, signed deliveries, and the delivery log

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 08:00:00

Issue 23, item 4. The org-level webhook of before (``organisations.webhook_url``
and ``webhook_secret``) becomes an endpoint of that org: its secret, a free
string used as the HMAC key, is kept as the same key bytes in the Standard
Webhooks form (``whsec_`` + base64); an org webhook without a secret gets a
fresh random one (``meterd webhooks list --show-secrets`` shows it). The org
columns are then cleared; they are no longer read.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import meterd.storage.models

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UtcDateTime = meterd.storage.models.UtcDateTime


def upgrade() -> None:
    endpoints = op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=400), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("deleted_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_endpoints_org", "webhook_endpoints", ["org_id", "created_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("notification_id", sa.String(length=64), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["notification_id"], ["notifications.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("notification_id", "endpoint_id", name="uq_webhook_deliveries"),
    )
    op.create_index("ix_webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id"])
    op.create_table(
        "webhook_attempts",
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["webhook_deliveries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("delivery_id", "number"),
    )
    op.create_index("ix_notifications_org_created", "notifications", ["org_id", "created_at", "id"])
    # The org webhook of before becomes an endpoint.
    bind = op.get_bind()
    orgs = sa.table(
        "organisations",
        sa.column("id", sa.String),
        sa.column("webhook_url", sa.Text),
        sa.column("webhook_secret", sa.String),
    )
    now = datetime.now(UTC)
    rows = bind.execute(
        sa.select(orgs.c.id, orgs.c.webhook_url, orgs.c.webhook_secret).where(
            orgs.c.webhook_url.is_not(None)
        )
    ).all()
    for org_id, url, secret in rows:
        key = secret.encode() if secret else secrets.token_bytes(24)
        bind.execute(
            sa.insert(endpoints).values(
                id=uuid.uuid4(),
                org_id=org_id,
                url=url,
                secret="whsec_" + base64.b64encode(key).decode(),
                created_at=now,
                deleted_at=None,
            )
        )
    if rows:
        bind.execute(sa.update(orgs).values(webhook_url=None, webhook_secret=None))


def downgrade() -> None:
    """The tables go; the endpoints are not written back into the org columns."""
    op.drop_index("ix_notifications_org_created", table_name="notifications")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_endpoint", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhook_endpoints_org", table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
