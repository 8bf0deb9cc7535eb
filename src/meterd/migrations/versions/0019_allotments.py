"""allotments: a parent entitlement's grant carved into child entitlements

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 08:30:00

Issue 23, item 5. ``POST /v1/entitlements/{id}/allotments`` records each carve
here, in the transaction that creates the child and lowers the parent's limit;
the idempotency key is unique per parent.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import meterd.storage.models

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

UtcDateTime = meterd.storage.models.UtcDateTime
ExactDecimal = meterd.storage.models.ExactDecimal


def upgrade() -> None:
    op.create_table(
        "allotments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=False),
        sa.Column("child_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("quantity", ExactDecimal(precision=38, scale=6), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"]),
        sa.ForeignKeyConstraint(["parent_id"], ["entitlements.id"]),
        sa.ForeignKeyConstraint(["child_id"], ["entitlements.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("parent_id", "idempotency_key", name="uq_allotments_key"),
    )
    op.create_index("ix_allotments_parent", "allotments", ["parent_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_allotments_parent", table_name="allotments")
    op.drop_table("allotments")
