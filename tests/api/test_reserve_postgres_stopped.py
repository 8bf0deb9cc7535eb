"""Issue 20, item 5, with the database really gone: a PostgreSQL cluster of the test's
own (``initdb``/``pg_ctl`` on a free port, bench/soak.py's harness; never the
machine's server) is stopped hard while the API serves reserve and value reads
and the worker's ingest counts, past the 10 s the kept meters last (the catalog's
clock is moved, not slept on)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from meterd.api.app import create_app
from meterd.config import Settings
from meterd.core.domain import Outcome
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.services.meters import MeterCatalog
from meterd.storage.database import Database
from meterd.storage.meters import MeterStore
from meterd.storage.migrate import upgrade
from meterd.testing import event

from ..conftest import BACKEND, require
from ..helpers import grant
from .conftest import NoBroker

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import soak

VALUE = "/v1/customers/cust-1/features/api_calls"
RESERVE = VALUE + "/reserve"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def postgres() -> Iterator[soak.PrivatePostgres]:
    try:
        soak.postgres_bindir()
    except FileNotFoundError as exc:
        require("PostgreSQL's initdb/pg_ctl", exc)
    root = Path(tempfile.mkdtemp(prefix="meterd-pg-stopped-"))
    root.chmod(0o755)  # the postgres user must reach its directory
    pg = soak.PrivatePostgres(root / "pg")
    pg.init()
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()
        soak.shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def served(
    postgres: soak.PrivatePostgres, redis_client: redis.Redis, redis_prefix: str
) -> Iterator[tuple[Runtime, TestClient, dict[str, str], Clock]]:
    """A runtime on the private cluster: cust-1 with 10 api_calls, 3 used, one
    reservation of 1 granted through the API (the key verified, the meters kept)."""
    upgrade(postgres.url)
    settings = Settings(
        database_url=postgres.url,
        redis_prefix=redis_prefix,
        unsafe_redis=BACKEND == "real",
        _env_file=None,  # type: ignore[call-arg]
    )
    database = Database.connect(postgres.url)
    rt = Runtime(settings=settings, redis=redis_client, database=database)
    clock = Clock()
    rt.__dict__["meters"] = MeterCatalog(
        MeterStore(database.sessions).meters_of, version=rt.meter_versions.current, clock=clock
    )
    now = utcnow()
    rt.catalog.create_org("acme", "Acme", now)
    rt.catalog.create_feature("acme", "api_calls", now=now - timedelta(days=1))
    grant(rt, quantity="10", starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=30))
    assert rt.ingest.ingest([event(quantity="3", event_id="u1", time=now)], now=now).outcomes == [
        Outcome.ACCEPTED
    ]
    token, _ = rt.api_keys.create("acme", [Permission.ALL], now)
    headers = {"x-api-key": token}
    app = create_app(lambda: rt, publish_events=lambda _batch: None, celery_app=NoBroker)
    with TestClient(app) as client:
        first = client.post(
            RESERVE, json={"quantity": "1", "idempotency_key": "k-0"}, headers=headers
        )
        assert first.json()["outcome"] == "granted", first.text
        yield rt, client, headers, clock
    database.dispose()


def test_reserve_value_and_ingest_answer_past_the_meters_ttl_with_postgresql_stopped(
    postgres: soak.PrivatePostgres, served: tuple[Runtime, TestClient, dict[str, str], Clock]
) -> None:
    rt, client, headers, clock = served
    postgres.stop_hard()
    clock.now += 60  # the kept meters are 60 s old: past their 10 s ttl

    def reserve(quantity: str, key: str) -> Any:
        response = client.post(
            RESERVE, json={"quantity": quantity, "idempotency_key": key}, headers=headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    granted = reserve("5", "k-1")
    assert (granted["outcome"], granted["value"]["remaining"]) == ("granted", "1")
    assert reserve("2", "k-2")["outcome"] == "denied"
    assert reserve("1", "k-3")["outcome"] == "granted"
    assert reserve("1", "k-4")["outcome"] == "denied"

    now = utcnow()
    report = rt.ingest.ingest([event(quantity="2", event_id="u2", time=now)], now=now)
    assert report.outcomes == [Outcome.ACCEPTED]  # usage is counted, as overage

    value = client.get(VALUE, headers=headers)
    assert value.status_code == 200, value.text
    assert (value.json()["consumed"], value.json()["overage"]) == ("12", "2")
    assert client.get("/v1/entitlements", headers=headers).status_code == 503
