"""event log: every accepted event, written by the flush; usage rollups per quarter hour

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 15:00:00

On PostgreSQL the log is partitioned by event time, a partition a day; the
partitions are created by ``EventLog.maintain`` (beat, and the flush for a day
it needs). Events counted before this revision are not in the log.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import meterd.storage.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UtcDateTime = meterd.storage.models.UtcDateTime
ExactDecimal = meterd.storage.models.ExactDecimal


def upgrade() -> None:
    op.create_table(
        "event_log",
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("event_id", sa.String(512), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("event_time", UtcDateTime(), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("entitlement_id", sa.Uuid(), nullable=False),
        sa.Column("period_start", UtcDateTime(), nullable=False),
        sa.Column("quantity", ExactDecimal(), nullable=False),
        sa.Column("event_quantity", ExactDecimal(), nullable=False),
        sa.Column("target_id", sa.Uuid(), nullable=True),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "source", "event_id", "part", "event_time"),
        postgresql_partition_by="RANGE (event_time)",
    )
    op.create_index(
        "ix_event_log_customer_time", "event_log", ["org_id", "customer_id", "event_time"]
    )
    op.create_table(
        "usage_rollups",
        sa.Column("entitlement_id", sa.Uuid(), nullable=False),
        sa.Column("bucket_start", UtcDateTime(), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("quantity", ExactDecimal(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("entitlement_id", "bucket_start"),
    )
    op.create_index(
        "ix_usage_rollups_customer",
        "usage_rollups",
        ["org_id", "customer_id", "feature", "bucket_start"],
    )


def downgrade() -> None:
    op.drop_index("ix_usage_rollups_customer", table_name="usage_rollups")
    op.drop_table("usage_rollups")
    op.drop_index("ix_event_log_customer_time", table_name="event_log")
    op.drop_table("event_log")
