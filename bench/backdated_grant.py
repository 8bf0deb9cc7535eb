"""One backdated auto-renewing grant over HTTP: seconds and rows written (issue 20).

Creates a SQLite file in a temporary directory (the embedded default's store) and
an in-memory Redis (fakeredis), POSTs one entitlement with the given ``starts_at``,
a term and ``auto_renew``, runs the lifecycle job once, and prints the request's
wall time and the rows of usage_periods, entitlement_transitions and
notifications, and the database file's size.

    python bench/backdated_grant.py 0001-01-01T00:00:00Z
    python bench/backdated_grant.py 1900-01-01T00:00:00Z --term-unit MONTH
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import fakeredis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from meterd.api.app import create_app
from meterd.config import Settings
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.storage.database import Database
from meterd.storage.migrate import upgrade

TABLES = ("usage_periods", "entitlement_transitions", "notifications")


class NoBroker:
    def connection_for_read(self) -> Any:
        raise ConnectionError("no broker in this benchmark")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("starts_at", help="RFC 3339, e.g. 0001-01-01T00:00:00Z")
    parser.add_argument("--term-value", type=int, default=1)
    parser.add_argument("--term-unit", default="DAY", choices=["DAY", "WEEK", "MONTH", "YEAR"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "meterd.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        settings = Settings(
            database_url=url,
            redis_url="redis://unused:6379/0",
            redis_prefix="bench",
            _env_file=None,  # type: ignore[call-arg]
        )
        database = Database.connect(url)
        rt = Runtime(settings=settings, redis=fakeredis.FakeRedis(), database=database)
        now = utcnow()
        rt.catalog.create_org("bench", "bench", now)
        rt.catalog.create_feature("bench", "api_calls", now=now)
        token, _ = rt.api_keys.create("bench", [Permission.ALL], now)
        app = create_app(lambda: rt, publish_events=lambda _: None, celery_app=NoBroker)
        body = {
            "customer_id": "c1", "feature": "api_calls", "quantity": "10",
            "starts_at": args.starts_at, "auto_renew": True,
            "term_value": args.term_value, "term_unit": args.term_unit,
        }  # fmt: skip
        with TestClient(app) as client:
            started = time.perf_counter()
            response = client.post("/v1/entitlements", json=body, headers={"x-api-key": token})
            seconds = time.perf_counter() - started
        print(f"POST /v1/entitlements: {response.status_code} in {seconds:.2f} s")
        started = time.perf_counter()
        report = rt.lifecycle.advance_all(utcnow())
        print(f"lifecycle job after it: {report.transitions} transitions in "
              f"{time.perf_counter() - started:.2f} s")  # fmt: skip
        with database.engine.connect() as conn:
            for table in TABLES:
                rows = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
                print(f"{table}: {rows:,} rows")
        print(f"database file: {path.stat().st_size:,} bytes")
        database.dispose()


if __name__ == "__main__":
    main()
