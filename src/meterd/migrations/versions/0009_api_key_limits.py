"""api keys: expiry, last use, rate limit per key, rotation

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 10:00:00

Every new column is nullable and NULL means what keys did before: no expiry,
never seen, the default rate limit, not a rotation. Existing keys keep working.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import meterd.storage.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UtcDateTime = meterd.storage.models.UtcDateTime


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("rate_limit", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rate_burst", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rotated_from", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("rotated_from")
        batch_op.drop_column("rate_burst")
        batch_op.drop_column("rate_limit")
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
