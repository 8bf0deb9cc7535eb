"""Migration 0010 (scales, meters, dimensions) keeps every stored value exact: data
written before it reads back the same after it, on both backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import fakeredis
import pytest
import sqlalchemy as sa
from alembic import command

from meterd.config import Settings
from meterd.runtime import Runtime
from meterd.storage.database import Database, make_engine
from meterd.storage.migrate import alembic_config, upgrade
from meterd.testing import event

from .conftest import BACKEND, NOW, REAL_PG_URL
from .helpers import grant


@pytest.fixture
def scratch_url(tmp_path: Path) -> Iterator[str]:
    """A database of its own (this test migrates down and up)."""
    if BACKEND != "real":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    admin = make_engine(REAL_PG_URL, isolation_level="AUTOCOMMIT")
    name = f"meterd_mig_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield REAL_PG_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def runtime_on(url: str) -> Runtime:
    settings = Settings(database_url=url, redis_prefix="mig", _env_file=None)  # type: ignore[call-arg]
    return Runtime(settings=settings, redis=fakeredis.FakeRedis(), database=Database.connect(url))


def test_values_written_before_0010_read_back_exactly_after_it(scratch_url: str) -> None:
    upgrade(scratch_url)
    rt = runtime_on(scratch_url)
    rt.catalog.create_org("acme", "Acme", NOW)
    rt.catalog.create_feature("acme", "api_calls", now=NOW)
    ent = grant(rt, quantity="9007199254.740991", ends_at=NOW + timedelta(days=20))
    rt.ingest.ingest(
        [event(quantity="123.456789", event_id="a"), event(quantity="0.000001", event_id="b")],
        now=NOW,
    )
    rt.flush.flush_all(NOW)
    rt.database.dispose()

    command.downgrade(alembic_config(scratch_url), "0009")  # as the schema was before
    upgrade(scratch_url)

    after = runtime_on(scratch_url)
    feature = after.catalog.feature("acme", "api_calls")
    assert (feature.scale, feature.aggregation) == (6, "SUM")
    (balance,) = after.balance.balances("acme", "cust-1", "api_calls", NOW)
    assert (balance.entitlement_id, balance.quantity, balance.consumed) == (
        ent.id,
        Decimal("9007199254.740991"),
        Decimal("123.456790"),
    )
    after.database.dispose()
