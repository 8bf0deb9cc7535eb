"""features: scale, aggregation and meter over raw events; entitlements: dimensions

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 12:00:00

Existing features get scale 6 and SUM: their counters were integer micro-units,
which are exactly 10^-6 units, so every stored and counted value keeps its
meaning without a rewrite. The meter columns and the entitlement filters are
nullable; NULL is what features and entitlements did before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, also on SQLite: a batch table copy would drop tables that
    # other tables' foreign keys point at, which fails once they hold rows.
    op.add_column(
        "features", sa.Column("scale", sa.Integer(), nullable=False, server_default=sa.text("6"))
    )
    op.add_column(
        "features",
        sa.Column("aggregation", sa.String(length=16), nullable=False, server_default="SUM"),
    )
    op.add_column("features", sa.Column("event_type", sa.String(length=128), nullable=True))
    op.add_column("features", sa.Column("value_property", sa.String(length=200), nullable=True))
    op.add_column("features", sa.Column("meter_filters", sa.JSON(), nullable=True))
    op.add_column("entitlements", sa.Column("filters", sa.JSON(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN in place (SQLite >= 3.35 has it too): Alembic's
    # SQLite path copies the table, and dropping the old copy fails the foreign
    # keys other tables hold on it.
    drops = [("entitlements", "filters")] + [
        ("features", c)
        for c in ("meter_filters", "value_property", "event_type", "aggregation", "scale")
    ]
    for table, column in drops:
        op.execute(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
