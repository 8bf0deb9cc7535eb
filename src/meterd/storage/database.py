"""Engines and sessions for PostgreSQL (production) and SQLite (embedded).

``Database`` is the one handle the stores share: each store takes its session
factory and opens its own short transaction per method.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event, insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from meterd.storage import exact


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings each backend needs for concurrent workers."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets readers run beside the flush's writer; foreign keys are off by
            # default in SQLite.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            exact.register(dbapi_connection)  # exact decimals as BLOBs: storage/exact.py

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@dataclass(frozen=True, slots=True)
class Database:
    """An engine and its session factory (one per process)."""

    engine: Engine
    sessions: sessionmaker[Session]

    @classmethod
    def connect(cls, url: str, **kwargs: Any) -> Database:
        engine = make_engine(url, **kwargs)
        return cls(engine, make_session_factory(engine))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def ping(self) -> None:
        """Raises if the database does not answer."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def within(sessions: sessionmaker[Session], session: Session | None) -> Iterator[Session]:
    """The caller's session, whose transaction the caller owns; else a new
    transaction, committed when the block ends."""
    if session is not None:
        yield session
        return
    with sessions.begin() as s:
        yield s


def insert_ignoring_duplicates(
    s: Session, model: Any, rows: Sequence[dict[str, Any]], unique: Sequence[str]
) -> None:
    """INSERT ... ON CONFLICT (unique) DO NOTHING: for rows two writers may race to
    create (a month's usage period, a notification)."""
    if not rows:
        return
    dialect = s.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(model).on_conflict_do_nothing(index_elements=list(unique))
    elif dialect == "sqlite":
        stmt = sqlite.insert(model).on_conflict_do_nothing(index_elements=list(unique))
    else:  # pragma: no cover - meterd runs on PostgreSQL and SQLite
        stmt = insert(model)
    s.execute(stmt, list(rows))


def bulk_insert(s: Session, model: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Insert many fresh rows (no conflicts expected) as fast as the backend allows:
    COPY on PostgreSQL, several times faster than a multi-row INSERT for the tens of
    thousands of audit rows a lifecycle batch writes; executemany elsewhere. Values
    must already be in database form (aware datetimes, UUIDs, Decimals): COPY
    bypasses SQLAlchemy's type processing. Column names come from the code, never
    from input."""
    if not rows:
        return
    if s.get_bind().dialect.name != "postgresql":
        s.execute(insert(model), list(rows))
        return
    columns = list(rows[0])
    table = model.__table__
    unknown = [c for c in columns if c not in table.c]
    if unknown:
        raise ValueError(f"not columns of {table.name}: {unknown}")
    driver = s.connection().connection.driver_connection
    assert driver is not None
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])
