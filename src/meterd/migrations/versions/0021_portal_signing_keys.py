"""portal signing keys: the secrets that sign customer portal tokens

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 11:00:00

Issue 24, item 2. ``POST /v1/portal-tokens`` signs with the current key (created
on first use); every replica reads the same keys, so a token minted by one is
verified by all. ``generation`` is unique: two replicas creating the first key at
once end with one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import meterd.storage.models

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

UtcDateTime = meterd.storage.models.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "portal_signing_keys",
        sa.Column("kid", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("secret", sa.LargeBinary(length=64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("retired_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("kid"),
        sa.UniqueConstraint("generation", name="uq_portal_signing_keys_generation"),
    )


def downgrade() -> None:
    op.drop_table("portal_signing_keys")
