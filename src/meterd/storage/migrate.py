"""Schema migrations, run by ``meterd db upgrade`` (Alembic, scripts shipped in the package)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, make_url, text

from meterd.config import redact_url
from meterd.storage.database import make_engine

#: What to do about a database without meterd's schema, for people.
_SET_UP = (
    "run `meterd db upgrade` (or `meterd dev`, `meterd demo`) to create it, run meterd "
    "from the directory that holds yours, or set METERD_DATABASE_URL"
)


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "meterd:migrations")
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def schema_problem(database_url: str) -> str | None:
    """Why the database cannot serve meterd yet, in one sentence with what to do; None
    once it holds meterd's schema (any revision: ``db upgrade`` moves it on). A SQLite
    file that does not exist is reported, never created. Raises what the driver raises
    when the database does not answer."""
    shown = redact_url(database_url)
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        if not url.query.get("uri") and not path.exists():
            setting = f"METERD_DATABASE_URL is {shown}"
            if not path.is_absolute():
                setting += f", a path relative to the current directory {Path.cwd()}"
            return f"there is no meterd database at {path.resolve()} ({setting}): {_SET_UP}"
        shown = f"{shown} ({path.resolve()})"
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            revision = None
            if inspect(connection).has_table("alembic_version"):
                revision = connection.execute(
                    text("SELECT version_num FROM alembic_version")
                ).scalar()
    finally:
        engine.dispose()
    if revision is None:
        return f"the database {shown} is empty: it holds no meterd schema; {_SET_UP}"
    return None
