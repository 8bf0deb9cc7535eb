"""SQLite: quantities as 16-byte exact BLOBs instead of 64-bit micro-units

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 23:00:00

On SQLite every quantity column held integer micro-units, which stop at
9.2 x 10^12 units. ``storage/exact.py`` keeps them as offset-binary BLOBs of
micro-units instead (any ``Numeric(38, 6)`` value, ordered by ``memcmp``).
This rewrites each stored integer as its BLOB, value for value. PostgreSQL
(``Numeric(38, 6)``) is untouched. The downgrade writes integers back and
refuses a value an integer cannot hold.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from meterd.storage.exact import decode_micros, encode_micros

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: Every quantity column (``ExactDecimal``) there is.
QUANTITY_COLUMNS = {
    "entitlements": ("quantity", "renewal_quantity", "allotment"),
    "usage_periods": ("quantity", "consumed"),
    "flush_batches": ("total",),
    "event_log": ("quantity", "event_quantity"),
    "usage_rollups": ("quantity",),
    "plans": ("quantity", "renewal_quantity"),
}


def _rewrite(to_blob: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table, columns in QUANTITY_COLUMNS.items():
        for column in columns:
            kind = "integer" if to_blob else "blob"
            rows = bind.execute(
                sa.text(f'SELECT rowid, "{column}" FROM "{table}" WHERE typeof("{column}") = :k'),
                {"k": kind},
            ).all()
            if not rows:
                continue
            values = []
            for rowid, value in rows:
                micros = decode_micros(value)
                if not to_blob and not -(2**63) <= micros < 2**63:
                    raise RuntimeError(
                        f"{table}.{column} holds {micros} micro-units, more than SQLite"
                        " integers hold: this database cannot go below revision 0011"
                    )
                values.append({"v": encode_micros(micros) if to_blob else micros, "r": rowid})
            bind.execute(sa.text(f'UPDATE "{table}" SET "{column}" = :v WHERE rowid = :r'), values)


def upgrade() -> None:
    _rewrite(to_blob=True)


def downgrade() -> None:
    _rewrite(to_blob=False)
