"""Scratch stores for the benchmarks: a fresh PostgreSQL database (migrated) and a
Redis key prefix (db 11), both removed afterwards, whatever happens; and the
catalog most benchmarks count against."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import redis
import sqlalchemy as sa

from meterd.config import Settings
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.storage.database import make_engine
from meterd.storage.migrate import upgrade

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


def unlimited_customers(rt: Runtime, org: str, feature: str, customers: int, now: datetime) -> None:
    """An org, a feature and customers ``c0`` .. ``c<customers-1>`` with an unlimited
    grant each, started two days before ``now``."""
    rt.catalog.create_org(org, org, now)
    rt.catalog.create_feature(org, feature, now=now)
    unlimited_grants(rt, org, feature, customers, now)


def unlimited_grants(rt: Runtime, org: str, feature: str, customers: int, now: datetime) -> None:
    """Customers ``c0`` .. ``c<customers-1>`` of an existing feature, an unlimited
    grant each, started two days before ``now``."""
    for c in range(customers):
        rt.catalog.create_entitlement(
            NewEntitlement(
                org=org,
                customer_id=f"c{c}",
                feature=feature,
                quantity=None,  # unlimited
                starts_at=now - timedelta(days=2),
            ),
            now,
        )
