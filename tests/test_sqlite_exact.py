"""SQLite keeps quantities exactly (storage/exact.py): 16-byte offset-binary BLOBs that
SQLite orders as the numbers they hold, added and summed without loss, and
migration 0011 rewrites the integers stored before it value for value."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from hypothesis import given
from hypothesis import strategies as st

from meterd.storage import exact
from meterd.storage.exact import decode_micros, encode_micros
from meterd.storage.migrate import alembic_config, upgrade

from .conftest import NOW

NUMERIC_38_6 = 10**38 - 1  # micro-units of the largest Numeric(38, 6)
micros = st.integers(-NUMERIC_38_6, NUMERIC_38_6)


@given(micros)
def test_a_blob_decodes_to_the_micro_units_it_encodes(value: int) -> None:
    assert decode_micros(encode_micros(value)) == value


@given(micros, micros)
def test_sqlite_orders_the_blobs_as_the_numbers_they_hold(a: int, b: int) -> None:
    connection = sqlite3.connect(":memory:")
    (less,) = connection.execute("SELECT ? < ?", (encode_micros(a), encode_micros(b))).fetchone()
    assert bool(less) == (a < b)


def test_exact_add_and_exact_sum_pass_what_64_bit_integers_hold() -> None:
    connection = sqlite3.connect(":memory:")
    exact.register(connection)
    connection.execute("CREATE TABLE t (q BIGINT)")
    big = 9_007_199_254_740_991 * 10**6  # 2^53 - 1 units at scale 0, in micro-units
    connection.executemany("INSERT INTO t VALUES (?)", [(encode_micros(big),)] * 3)
    connection.execute("INSERT INTO t VALUES (NULL)")
    (total,) = connection.execute("SELECT exact_sum(q) FROM t").fetchone()
    assert decode_micros(total) == 3 * big
    (added,) = connection.execute(
        "SELECT exact_add(?, ?)", (encode_micros(big), encode_micros(-1))
    ).fetchone()
    assert decode_micros(added) == big - 1


def test_exact_sum_of_nothing_is_null_like_sum() -> None:
    connection = sqlite3.connect(":memory:")
    exact.register(connection)
    connection.execute("CREATE TABLE t (q BIGINT)")
    assert connection.execute("SELECT exact_sum(q) FROM t").fetchone() == (None,)


def test_migration_0011_rewrites_stored_micro_units_as_exact_blobs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0010")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO flush_batches (id, committed_at, periods, total)"
                " VALUES ('b1', '2026-01-01', 1, 9223372036854775807), ('b2', '2026-01-01', 1, -5)"
            )
        )
    upgrade(url)
    with engine.begin() as conn:
        rows = dict(conn.execute(sa.text("SELECT id, total FROM flush_batches")).all())
    assert {k: decode_micros(v) for k, v in rows.items()} == {"b1": 2**63 - 1, "b2": -5}
    assert all(isinstance(v, bytes) for v in rows.values())
    command.downgrade(alembic_config(url), "0010")
    with engine.begin() as conn:
        back = dict(conn.execute(sa.text("SELECT id, total FROM flush_batches")).all())
    assert back == {"b1": 2**63 - 1, "b2": -5}
    engine.dispose()


def test_a_quantity_past_64_bit_micro_units_round_trips_through_the_model(tmp_path: Path) -> None:
    from meterd.storage.database import Database
    from meterd.storage.models import FlushBatch

    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    db = Database.connect(url)
    huge = Decimal("123456789012345678901234.000001")
    with db.sessions.begin() as s:
        s.add(FlushBatch(id="b", committed_at=NOW, periods=1, total=huge))
    with db.sessions() as s:
        stored = s.scalars(sa.select(FlushBatch.total)).one()
        above = s.scalars(
            sa.select(FlushBatch.id).where(FlushBatch.total > Decimal("123456789012345678901234"))
        ).all()
    assert (stored, above) == (huge, ["b"])
    db.dispose()
