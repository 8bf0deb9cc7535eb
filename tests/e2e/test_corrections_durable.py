"""Voids retried while Redis is killed -9 (AOF ``appendfsync always``): every event is
taken back exactly once, whatever the kill interrupted (a void that failed is
retried; one that landed before the kill answers 409 on its retry)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from meterd.core.errors import ConflictError
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


def test_voids_retried_across_a_redis_kill_take_each_event_back_once(
    own_redis: OwnRedis, e2e_settings: Any, database: Database
) -> None:
    rt = Runtime(
        settings=e2e_settings,
        redis=redis.Redis(port=own_redis.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)),
        database=database,
    )
    rt.catalog.create_org("acme", "Acme", NOW)
    rt.catalog.create_feature("acme", "api_calls", now=NOW)
    grant_customers(rt, 2, ("100000",))
    sent = utcnow()
    events = [
        event(customer=f"cust-{i % 2}", event_id=f"e{i}", quantity="2.5", time=sent)
        for i in range(300)
    ]
    rt.ingest.ingest(events[:150], now=utcnow())
    rt.flush.flush_all(utcnow())  # half flushed, half still waiting in Redis
    rt.ingest.ingest(events[150:], now=utcnow())
    to_void = [e["id"] for e in events[::2]]  # every other one, flushed and not
    stream = kill_mid_stream(
        own_redis,
        to_void,
        lambda event_id: rt.corrections.void(
            "acme", "tests", event_id, reason="test", actor="cli", now=utcnow()
        ),
        kill_after=40,
        settled=(ConflictError,),  # it landed before the failure was seen: already void
    )

    assert 40 <= stream.killed_after < len(to_void), "the kill must land mid-stream"
    assert stream.retries > 0, "some void must have failed while Redis was down"
    rt.flush.flush_all(utcnow(), max_batches=100)
    assert flushed_total(rt) == Decimal("2.5") * (len(events) - len(to_void))
    assert_log_matches_periods(rt)
    rt.redis.close()


def test_max_voids_retried_across_a_redis_kill_recount_each_period_once(
    own_redis: OwnRedis, e2e_settings: Any, database: Database
) -> None:
    """Each void removes the current maximum of a MAX period (a recount every time),
    while Redis is killed -9 mid-stream: every period ends at the largest sample left."""
    rt = Runtime(
        settings=e2e_settings,
        redis=redis.Redis(port=own_redis.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)),
        database=database,
    )
    rt.catalog.create_org("acme", "Acme", NOW)
    sent = utcnow()
    rt.catalog.create_feature(
        "acme", "api_calls", now=sent - timedelta(days=1), scale=0, aggregation="MAX"
    )
    grant_customers(rt, 2, ("100000",))
    events = [
        event(
            customer=f"cust-{i % 2}",
            event_id=f"s{i}",
            quantity=str(i // 2 + 1),
            time=sent - timedelta(milliseconds=200 - i),
        )
        for i in range(120)
    ]
    rt.ingest.ingest(events[:60], now=utcnow())
    rt.flush.flush_all(utcnow())  # half flushed, half still waiting in Redis
    rt.ingest.ingest(events[60:], now=utcnow())
    # the largest of each customer first: every void moves its period's figure
    to_void = [f"s{i}" for i in reversed(range(120)) if i % 4 in (2, 3)]
    stream = kill_mid_stream(
        own_redis,
        to_void,
        lambda event_id: rt.corrections.void(
            "acme", "tests", event_id, reason="test", actor="cli", now=utcnow()
        ),
        kill_after=15,
        settled=(ConflictError,),
    )

    assert 15 <= stream.killed_after < len(to_void), "the kill must land mid-stream"
    assert stream.retries > 0, "some void must have failed while Redis was down"
    rt.flush.flush_all(utcnow(), max_batches=100)
    figures = [
        b.consumed
        for customer in ("cust-0", "cust-1")
        for b in rt.balance.balances("acme", customer, "api_calls", utcnow())
    ]
    assert figures == [Decimal(59), Decimal(59)]  # s116 and s117 are the largest left
    assert_log_matches_periods(rt)
    rt.redis.close()
