"""entitlement attributes: the tenant page's own fields, one JSON object per entitlement

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 11:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NOT NULL with a server default of an empty object: every existing row gets {}
    # (PostgreSQL and SQLite both fill existing rows from the default).
    with op.batch_alter_table("entitlements", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("attributes", sa.JSON(), server_default=sa.text("'{}'"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("entitlements", schema=None) as batch_op:
        batch_op.drop_column("attributes")
