"""alert rules: thresholds an org sets on its entitlements' periods

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 07:30:00

Issue 23, item 3. An org without rows here keeps the default rules (80 % and
100 % of a PRE_PAID period's limit).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import meterd.storage.models

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

UtcDateTime = meterd.storage.models.UtcDateTime
ExactDecimal = meterd.storage.models.ExactDecimal


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("feature", sa.String(length=64), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("entitlement_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("threshold", ExactDecimal(precision=38, scale=6), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("deleted_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alert_rules_org", "alert_rules", ["org_id", "deleted_at"])


def downgrade() -> None:
    op.drop_index("ix_alert_rules_org", table_name="alert_rules")
    op.drop_table("alert_rules")
