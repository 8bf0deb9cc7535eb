"""backfill level records: what a LATEST or UNIQUE_COUNT period only the backfill
counts depends on (its latest sample, the values it counted)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 07:00:00

A closed LATEST or UNIQUE_COUNT period's figure is exact to backfill only if its
whole history is known: these keep it for the periods no live event could reach
(they ended before their grant was created less the late window), so each batch
of an import judges its samples on the ones before. Issue 22, item 3.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import meterd.storage.models

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UtcDateTime = meterd.storage.models.UtcDateTime
#: as ``models/backfill.EVENT_KEY_LENGTH`` (org, source's length, source, logged id)
EVENT_KEY_LENGTH = 64 + 12 + 512 + 600


def upgrade() -> None:
    op.create_table(
        "backfill_latest",
        sa.Column("entitlement_id", sa.Uuid(), nullable=False),
        sa.Column("period_start", UtcDateTime(), nullable=False),
        sa.Column("event_time", UtcDateTime(), nullable=False),
        sa.Column("event_key", sa.String(EVENT_KEY_LENGTH), nullable=False),
        sa.PrimaryKeyConstraint("entitlement_id", "period_start"),
    )
    op.create_table(
        "backfill_unique_values",
        sa.Column("entitlement_id", sa.Uuid(), nullable=False),
        sa.Column("period_start", UtcDateTime(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("entitlement_id", "period_start", "digest"),
    )


def downgrade() -> None:
    op.drop_table("backfill_unique_values")
    op.drop_table("backfill_latest")
