"""rollover: partial indexes the lifecycle job's finalise query reads

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 11:30:00

Issue 23, item 1. Every lifecycle run looks for periods of entitlements that roll
over whose carry is not stored yet (``storage/rollover.py``). Without these it
reads every entitlement (``rollover_max`` is NULL for most) and every period of
those that roll over; with them, the entitlements that roll over and, of each,
only the periods whose carry is still open.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

#: meterd.storage.models.entitlements.ROLLS_OVER_SQL / CARRY_OPEN_SQL, as at this revision.
ROLLS_OVER_SQL = "rollover_max IS NOT NULL"
CARRY_OPEN_SQL = "rolled_over IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_entitlements_rollover",
        "entitlements",
        ["id"],
        postgresql_where=sa.text(ROLLS_OVER_SQL),
        sqlite_where=sa.text(ROLLS_OVER_SQL),
    )
    op.create_index(
        "ix_usage_periods_carry_open",
        "usage_periods",
        ["entitlement_id", "period_start"],
        postgresql_where=sa.text(CARRY_OPEN_SQL),
        sqlite_where=sa.text(CARRY_OPEN_SQL),
    )


def downgrade() -> None:
    op.drop_index("ix_usage_periods_carry_open", table_name="usage_periods")
    op.drop_index("ix_entitlements_rollover", table_name="entitlements")
