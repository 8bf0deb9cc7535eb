"""event_log.event_id: 600 characters, room for the id of a raw event's item

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24 01:40:00

An event id may be 512 characters (``events.MAX_ID_LENGTH``); the item a raw
event feeds a feature with is logged as ``<id>`` U+001F ``<feature>`` (a feature
key is at most 64), so up to 577. At 512 the COPY of such a row failed on
PostgreSQL, and with it every later flush. Widening a varchar is a catalog
change on PostgreSQL (no table rewrite; the partitions follow their parent).
SQLite does not enforce the length, but its declared schema is kept the same as
the models': the table is copied (no foreign key points at the log).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _resize(512, 600)


def downgrade() -> None:
    # On PostgreSQL this fails (as it should) while a longer id is logged.
    _resize(600, 512)


def _resize(old: int, new: int) -> None:
    with op.batch_alter_table("event_log") as table:  # ALTER on PostgreSQL, a copy on SQLite
        table.alter_column(
            "event_id",
            type_=sa.String(length=new),
            existing_type=sa.String(length=old),
            existing_nullable=False,
        )
