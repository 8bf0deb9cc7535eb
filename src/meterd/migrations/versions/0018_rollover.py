"""rollover: what a renewed term carries from the term before

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 08:30:00

Issue 23, item 1. ``rollover_max`` and ``rollover_min`` on entitlements and
plans (quantities; NULL reads as 0: nothing carries, as before this revision).
``usage_periods.rolled_over``: what a renewed term carried from the term before,
written once that term is closed past the late window (its consumption, and so
the carry, can no longer change); NULL: nothing carried, or not final yet
(``meterd.core.rollover``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import meterd.storage.models

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

ExactDecimal = meterd.storage.models.ExactDecimal


def upgrade() -> None:
    for table in ("entitlements", "plans"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(
                sa.Column("rollover_max", ExactDecimal(precision=38, scale=6), nullable=True)
            )
            batch_op.add_column(
                sa.Column("rollover_min", ExactDecimal(precision=38, scale=6), nullable=True)
            )
    with op.batch_alter_table("usage_periods") as batch_op:
        batch_op.add_column(
            sa.Column("rolled_over", ExactDecimal(precision=38, scale=6), nullable=True)
        )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+ has it): a batch would copy the table and drop
    # the old one, which SQLite refuses while other tables' foreign keys point at it.
    for table, column in (
        ("usage_periods", "rolled_over"),
        ("plans", "rollover_min"),
        ("plans", "rollover_max"),
        ("entitlements", "rollover_min"),
        ("entitlements", "rollover_max"),
    ):
        op.drop_column(table, column)
