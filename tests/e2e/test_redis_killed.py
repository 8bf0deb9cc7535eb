"""Redis itself SIGKILLed mid-stream: with AOF `appendfsync always` nothing that was
counted is lost, and the batch that failed is retried without counting twice."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.storage.database import Database
from meterd.testing import event

from ..conftest import NOW
from ..helpers import assert_log_matches_periods, flushed_total
from .kill_mid_stream import kill_mid_stream
from .servers import OwnRedis
from .test_worker_exactness import grant_customers

pytestmark = pytest.mark.e2e


def test_redis_killed_with_aof_loses_no_counted_event(
    own_redis: OwnRedis,
    e2e_settings,
    database: Database,  # type: ignore[no-untyped-def]
) -> None:
    rt = Runtime(
        settings=e2e_settings,
        # No client-side retries: the failed batch must come back the way a Celery
        # redelivery brings it, through the loop below.
        redis=redis.Redis(port=own_redis.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)),
        database=database,
    )
    rt.catalog.create_org("acme", "Acme", NOW)
    rt.catalog.create_feature("acme", "api_calls", now=NOW)
    grant_customers(rt, 5, ("1000000",))
    batches = [
        [event(customer=f"cust-{i % 5}", event_id=f"b{b}-{i}", quantity="1.5") for i in range(100)]
        for b in range(150)
    ]
    # like a Celery worker: a batch that failed is delivered again until it succeeds
    stream = kill_mid_stream(
        own_redis,
        batches,
        lambda batch: rt.ingest.ingest(batch, now=utcnow()),
        kill_after=40,
        pause=0.05,
        down=0.5,
    )

    assert 40 <= stream.killed_after < len(batches), "the kill must land mid-stream"
    assert stream.retries > 0, "some batch must have failed while Redis was down"
    expected = Decimal("1.5") * 100 * len(batches)
    rt.flush.flush_all(utcnow(), max_batches=100)
    assert flushed_total(rt) == expected
    assert_log_matches_periods(rt)
    rt.redis.close()


def test_redis_lost_without_aof_never_counts_a_logged_event_twice_in_the_database(
    tmp_path: Path,
    e2e_settings,
    database: Database,  # type: ignore[no-untyped-def]
) -> None:
    """What the safety check refuses, run anyway: a Redis without persistence is
    killed after a flush and comes back empty, and every event is delivered again
    (a producer retrying after the outage). The script takes the redeliveries for
    new events; the flush finds them in the event log, leaves them out, takes their
    units back off Redis, and flushes on."""
    server = OwnRedis(tmp_path, aof=False)
    server.start()
    try:
        rt = Runtime(settings=e2e_settings, redis=redis.Redis(port=server.port), database=database)
        rt.catalog.create_org("acme", "Acme", NOW)
        rt.catalog.create_feature("acme", "api_calls", now=NOW)
        grant_customers(rt, 5, ("1000000",))
        sent = utcnow()
        batches = [
            [
                event(customer=f"cust-{i % 5}", event_id=f"b{b}-{i}", quantity="1.5", time=sent)
                for i in range(100)
            ]
            for b in range(20)
        ]
        for batch in batches:
            rt.ingest.ingest(batch, now=utcnow())
        rt.flush.flush_all(utcnow(), max_batches=100)
        logged = Decimal("1.5") * 100 * len(batches)
        assert flushed_total(rt) == logged

        server.kill()
        server.start()  # empty: markers, totals and waiting events are gone
        for batch in batches:
            rt.ingest.ingest(batch, now=utcnow())
        fresh = [event(customer="cust-0", event_id=f"new-{i}", quantity="2") for i in range(10)]
        rt.ingest.ingest(fresh, now=utcnow())
        reports = rt.flush.flush_all(utcnow(), max_batches=100)

        assert sum(r.counted_twice for r in reports) == 100 * len(batches)
        assert flushed_total(rt) == logged + 20
        assert_log_matches_periods(rt)
        for c in range(5):  # the live read (Redis) agrees with the database again
            (live,) = rt.balance.current("acme", f"cust-{c}", "api_calls", utcnow())
            (stored,) = rt.balance.balances("acme", f"cust-{c}", "api_calls", utcnow())
            assert live.consumed == stored.flushed
        rt.redis.close()
    finally:
        server.kill()
