"""entitlements voided ahead: a partial index the lifecycle job's "void due" query reads

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 08:00:00

Issue 23, item 2. ``POST /v1/entitlements/{id}/void`` may void from an instant
still to come (``terminated_at`` ahead, the status unchanged until then): the job
finds those whose instant has come by a range scan of this index alone, whatever
the number of entitlements terminated long ago.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

#: meterd.storage.models.entitlements.VOID_DUE_SQL, as it was at this revision.
VOID_DUE_SQL = "terminated_at IS NOT NULL AND status <> 'TERMINATED'"


def upgrade() -> None:
    with op.batch_alter_table("entitlements") as batch_op:
        batch_op.create_index(
            "ix_entitlements_void_due",
            ["terminated_at"],
            postgresql_where=sa.text(VOID_DUE_SQL),
            sqlite_where=sa.text(VOID_DUE_SQL),
        )


def downgrade() -> None:
    with op.batch_alter_table("entitlements") as batch_op:
        batch_op.drop_index("ix_entitlements_void_due")
