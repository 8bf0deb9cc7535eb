"""Flush: pending counts reach the database exactly once, whatever breaks."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa

from meterd.runtime import Runtime
from meterd.services.flush import FlushService
from meterd.storage.database import make_engine, make_session_factory
from meterd.storage.event_log import EventLog
from meterd.storage.usage import UsageStore
from meterd.testing import event

from .conftest import NOW
from .helpers import consumed, flushed_total, grant


def test_flush_moves_pending_into_the_period(runtime: Runtime) -> None:
    ent = grant(runtime)
    runtime.ingest.ingest([event(quantity="2.5")], now=NOW)
    report = runtime.flush.flush_once(NOW)
    assert report.applied and report.total_micros == 2_500_000
    assert runtime.usage.periods_of(ent.id)[0].consumed == Decimal("2.5")
    assert runtime.counters.pending_fields() == {}


def test_flush_with_nothing_pending_does_nothing(runtime: Runtime) -> None:
    assert runtime.flush.flush_once(NOW).empty


def test_read_is_the_same_before_and_after_flush(runtime: Runtime) -> None:
    ent = grant(runtime)
    runtime.ingest.ingest([event(event_id=f"e{i}", quantity="1.5") for i in range(10)], now=NOW)
    before = runtime.balance.balances("acme", "cust-1", "api_calls", NOW)[0]
    assert (before.flushed, before.pending) == (Decimal(0), Decimal(15))
    runtime.flush.flush_all(NOW)
    after = runtime.balance.balances("acme", "cust-1", "api_calls", NOW)[0]
    assert (after.flushed, after.pending) == (Decimal(15), Decimal(0))
    assert consumed(runtime) == {str(ent.id): Decimal(15)}


def test_flush_that_died_before_the_commit_is_resumed_by_the_next(runtime: Runtime) -> None:
    grant(runtime)
    runtime.ingest.ingest([event(quantity="3")], now=NOW)
    crashed_batch = runtime.counters.begin_flush("batch-that-died")
    assert crashed_batch == "batch-that-died"
    # Usage keeps arriving while the crashed batch waits.
    runtime.ingest.ingest([event(event_id="e2", quantity="4")], now=NOW)
    assert list(consumed(runtime).values()) == [Decimal(7)]
    first = runtime.flush.flush_once(NOW)
    assert first.batch_id == "batch-that-died" and first.applied
    runtime.flush.flush_all(NOW)
    assert flushed_total(runtime) == Decimal(7)


def test_flush_that_died_after_the_commit_is_not_applied_again(runtime: Runtime) -> None:
    grant(runtime)
    runtime.ingest.ingest([event(quantity="3")], now=NOW)
    batch = runtime.counters.begin_flush("committed-then-died")
    assert batch is not None
    runtime.usage.apply_flush_batch(batch, runtime.counters.read_flush_batch().deltas, NOW)
    # ... the process died here, before end_flush. The read must not count it twice:
    assert list(consumed(runtime).values()) == [Decimal(3)]
    report = runtime.flush.flush_once(NOW)
    assert report.batch_id == batch and not report.applied
    assert flushed_total(runtime) == Decimal(3)
    assert runtime.counters.pending_fields() == {}


def test_flush_with_the_database_down_keeps_the_batch(runtime: Runtime) -> None:
    grant(runtime)
    runtime.ingest.ingest([event(quantity="3")], now=NOW)
    dead_engine = make_engine(
        "postgresql://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    sessions = make_session_factory(dead_engine)
    broken = FlushService(runtime.counters, UsageStore(sessions, EventLog(sessions, "postgresql")))
    with pytest.raises(sa.exc.OperationalError):
        broken.flush_once(NOW)
    assert runtime.counters.pending_fields() != {}
    assert list(consumed(runtime).values()) == [Decimal(3)]
    runtime.flush.flush_all(NOW)
    assert flushed_total(runtime) == Decimal(3)


def test_the_same_batch_applied_twice_counts_once(runtime: Runtime) -> None:
    grant(runtime)
    runtime.ingest.ingest([event(quantity="3")], now=NOW)
    batch = runtime.counters.begin_flush("twice")
    assert batch is not None
    deltas = runtime.counters.read_flush_batch().deltas
    assert runtime.usage.apply_flush_batch(batch, deltas, NOW).applied is True
    assert runtime.usage.apply_flush_batch(batch, deltas, NOW).applied is False
    assert flushed_total(runtime) == Decimal(3)


def test_concurrent_flushes_apply_each_batch_once(runtime: Runtime) -> None:
    grant(runtime, quantity=None)
    errors: list[BaseException] = []
    stop = threading.Event()

    def flusher() -> None:
        try:
            while not stop.is_set():
                runtime.flush.flush_once(NOW)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=flusher) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(200):
        runtime.ingest.ingest([event(event_id=f"e{i}", quantity="0.5")], now=NOW)
    stop.set()
    for t in threads:
        t.join()
    runtime.flush.flush_all(NOW)
    assert errors == []
    assert flushed_total(runtime) == Decimal(100)


def test_reads_racing_ingest_and_flush_stay_within_what_was_ingested(runtime: Runtime) -> None:
    grant(runtime, quantity=None)
    started = done = 0
    stop = threading.Event()

    def writer() -> None:
        nonlocal started, done
        while not stop.is_set():
            started += 1
            runtime.ingest.ingest([event(event_id=f"e{started}")], now=NOW)
            done += 1
            runtime.flush.flush_once(NOW)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(300):
            low = done
            (value,) = consumed(runtime).values()
            high = started
            assert low <= value <= high
    finally:
        stop.set()
        thread.join()
    runtime.flush.flush_all(NOW)
    assert flushed_total(runtime) == done


def test_read_retries_when_a_flush_moves_pending_mid_read(runtime: Runtime) -> None:
    """Between the Redis read and the database read, a whole flush runs: the pending
    value the reader saw is now in the database too. The read must notice."""
    from meterd.services.balance import BalanceService

    ent = grant(runtime)
    runtime.ingest.ingest([event(quantity="5")], now=NOW)
    real = runtime.usage
    calls = 0

    class FlushingMidRead(UsageStore):
        def flushed_consumption(self, keys, batch_id):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            if calls == 1:
                runtime.flush.flush_all(NOW)
            return real.flushed_consumption(keys, batch_id)

    racing = BalanceService(
        runtime.counters,
        FlushingMidRead(real.sessions, real.event_log),
        runtime.resolution_views,
        late_window=runtime.balance.late_window,
    )
    ((flushed, pending),) = racing.consumed(
        [(ent.id, runtime.usage.periods_of(ent.id)[0].period_start)], [6]
    ).values()
    assert flushed + pending == 5_000_000
    assert calls == 2
