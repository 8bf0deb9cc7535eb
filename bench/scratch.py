"""Scratch stores for the benchmarks: a fresh PostgreSQL database (migrated) and a
Redis key prefix (db 11), both removed afterwards, whatever happens."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import sqlalchemy as sa

from meterd.config import Settings
from meterd.migrate import upgrade
from meterd.storage.database import make_engine

PG = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")


@contextmanager
def scratch_settings(label: str) -> Iterator[Settings]:
    """Settings pointing at a new database and key prefix, dropped on exit."""
    name = f"meterd_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG.rsplit("/", 1)[0] + "/" + name
    prefix = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    try:
        upgrade(url)
        yield Settings(
            database_url=url,
            redis_url=REDIS_URL,
            redis_prefix=prefix,
            _env_file=None,  # type: ignore[call-arg]
        )
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
