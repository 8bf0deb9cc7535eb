"""backfill: the audit of each import, its applied batches, and the backfilled log

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 04:00:00

``event_log_backfill`` is a plain table on both backends (not partitioned):
the event log's retention drops ``event_log``'s day partitions and never this
table, so backfilled history (older than the retention by definition) stays,
and its (org, source, id) primary key dedupes it for good. Issue 22, item 3.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import meterd.storage.models

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

UtcDateTime = meterd.storage.models.UtcDateTime
ExactDecimal = meterd.storage.models.ExactDecimal


def upgrade() -> None:
    op.create_table(
        "backfills",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.Column("duplicates", sa.BigInteger(), nullable=False),
        sa.Column("dead_lettered", sa.BigInteger(), nullable=False),
        sa.Column("live", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_backfills_org_created", "backfills", ["org_id", "created_at"])
    op.create_table(
        "backfill_batches",
        sa.Column("backfill_id", sa.Uuid(), nullable=False),
        sa.Column("batch_no", sa.BigInteger(), nullable=False),
        sa.Column("applied_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("backfill_id", "batch_no"),
    )
    op.create_table(
        "event_log_backfill",
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("event_id", sa.String(600), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("event_time", UtcDateTime(), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("entitlement_id", sa.Uuid(), nullable=True),
        sa.Column("period_start", UtcDateTime(), nullable=True),
        sa.Column("quantity", ExactDecimal(), nullable=False),
        sa.Column("event_quantity", ExactDecimal(), nullable=False),
        sa.Column("target_id", sa.Uuid(), nullable=True),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("backfill_id", sa.Uuid(), nullable=False),
        sa.Column("counted_live", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "source", "event_id", "part"),
    )
    op.create_index(
        "ix_event_log_backfill_customer_time",
        "event_log_backfill",
        ["org_id", "customer_id", "event_time"],
    )
    op.create_index("ix_event_log_backfill_backfill", "event_log_backfill", ["backfill_id"])


def downgrade() -> None:
    op.drop_index("ix_event_log_backfill_backfill", table_name="event_log_backfill")
    op.drop_index("ix_event_log_backfill_customer_time", table_name="event_log_backfill")
    op.drop_table("event_log_backfill")
    op.drop_table("backfill_batches")
    op.drop_index("ix_backfills_org_created", table_name="backfills")
    op.drop_table("backfills")
