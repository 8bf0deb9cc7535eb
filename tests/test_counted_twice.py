"""An event the event log already holds, counted again because Redis lost its dedupe
marker (a restart without AOF): the flush leaves it out of the database, takes its
units back off the Redis counters, and goes on with the rest of the batch. Before,
its row broke the log's key and every flush after it failed."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from meterd.core.domain import Outcome
from meterd.core.notifications import NotificationType
from meterd.runtime import Runtime
from meterd.storage.event_log import partition_name
from meterd.storage.models import EventLogRow, Notification
from meterd.testing import event

from .conftest import NOW
from .helpers import assert_log_matches_periods, consumed, grant

LATER = NOW + timedelta(seconds=1)


def ingest(rt: Runtime, *events: dict[str, object], now: datetime = NOW) -> list[Outcome]:
    return rt.ingest.ingest(list(events), now=now).outcomes


def meterd_keys(rt: Runtime) -> list[bytes]:
    return list(rt.redis.scan_iter(match=rt.redis_keys.all_pattern))


def lose_redis(rt: Runtime) -> None:
    """A restart of a Redis without persistence: every key of meterd is gone."""
    for key in meterd_keys(rt):
        rt.redis.delete(key)


def redis_used(rt: Runtime, entitlement_id: str) -> int:
    """The consumed units the ingest script counts against, summed over the periods."""
    raw = rt.redis.hgetall(rt.redis_keys.used("acme", "cust-1"))
    prefix = f"{uuid.UUID(entitlement_id).hex}:".encode()
    return sum(int(v) for k, v in raw.items() if k.startswith(prefix))


def logged_rows(rt: Runtime, event_id: str) -> int:
    with rt.database.sessions() as s:
        stmt = select(func.count()).where(EventLogRow.event_id == event_id)
        return int(s.execute(stmt).scalar_one())


@pytest.fixture
def relogged(runtime: Runtime) -> Runtime:
    """``e1`` (4 units) counted and flushed, then Redis lost, then ``e1`` redelivered
    with ``e2`` (1 unit): the script takes ``e1`` for a new event."""
    grant(runtime, quantity="100")
    assert ingest(runtime, event(event_id="e1", quantity="4", time=NOW)) == [Outcome.ACCEPTED]
    runtime.flush.flush_all(NOW)
    lose_redis(runtime)
    assert ingest(
        runtime,
        event(event_id="e1", quantity="4", time=NOW),
        event(event_id="e2", quantity="1", time=NOW),
        now=LATER,  # a second acceptance: its own received_at
    ) == [Outcome.ACCEPTED, Outcome.ACCEPTED]
    return runtime


def test_the_flush_leaves_an_event_logged_before_out_of_the_counts(relogged: Runtime) -> None:
    (report,) = relogged.flush.flush_all(NOW)
    assert (report.applied, report.counted_twice, report.events) == (True, 1, 1)
    assert list(consumed(relogged).values()) == [Decimal(5)]


def test_the_event_log_keeps_one_row_of_an_event_counted_twice(relogged: Runtime) -> None:
    relogged.flush.flush_all(NOW)
    assert (logged_rows(relogged, "e1"), logged_rows(relogged, "e2")) == (1, 1)


def test_the_units_counted_twice_are_taken_back_off_redis(relogged: Runtime) -> None:
    (ent_id,) = consumed(relogged)
    relogged.flush.flush_all(NOW)
    assert redis_used(relogged, ent_id) == 5_000_000  # micro-units: 4 + 1


def test_flushes_go_on_after_an_event_counted_twice(relogged: Runtime) -> None:
    relogged.flush.flush_all(NOW)
    assert ingest(relogged, event(event_id="e3", quantity="2")) == [Outcome.ACCEPTED]
    (report,) = relogged.flush.flush_all(NOW)
    assert (report.applied, report.counted_twice) == (True, 0)
    assert list(consumed(relogged).values()) == [Decimal(7)]


def test_the_marker_written_by_the_second_count_makes_a_third_delivery_a_duplicate(
    relogged: Runtime,
) -> None:
    relogged.flush.flush_all(NOW)
    assert ingest(relogged, event(event_id="e1", quantity="4", time=NOW)) == [Outcome.DUPLICATE]


def test_a_flush_that_crashed_after_its_commit_takes_the_units_back_once(
    relogged: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ent_id,) = consumed(relogged)
    end_flush = relogged.counters.end_flush

    def crash(*args: object, **kwargs: object) -> bool:
        raise ConnectionError("the worker died after the commit")

    monkeypatch.setattr(relogged.counters, "end_flush", crash)
    with pytest.raises(ConnectionError):
        relogged.flush.flush_once(NOW)
    monkeypatch.setattr(relogged.counters, "end_flush", end_flush)
    (report,) = relogged.flush.flush_all(NOW)
    assert (report.applied, report.counted_twice) == (False, 1)
    assert redis_used(relogged, ent_id) == 5_000_000
    assert list(consumed(relogged).values()) == [Decimal(5)]
    assert relogged.flush.flush_all(NOW) == []


def test_the_flush_task_counts_events_counted_twice_in_the_metrics(
    relogged: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meterd import tasks

    from .test_metrics import scrape, value

    monkeypatch.setattr(tasks, "get_runtime", lambda: relogged)
    summary = tasks.flush.run()
    assert summary["counted_twice"] == 1
    samples = scrape(relogged)["meterd_counted_twice"]
    assert value(samples, "meterd_counted_twice_total") == 1


def notified_thresholds(rt: Runtime, entitlement_id: uuid.UUID) -> list[str]:
    with rt.database.sessions() as s:
        stmt = select(Notification.payload).where(
            Notification.entitlement_id == entitlement_id,
            Notification.type == NotificationType.THRESHOLD_CROSSED.value,
        )
        return sorted(s.scalars(stmt))


def test_a_threshold_crossed_only_by_units_counted_twice_is_not_notified(
    runtime: Runtime,
) -> None:
    """7 of 10 flushed; Redis lost; e1 counted again (14: the script notes 80% and
    100%). The database stays at 7, so neither notification is sent, and a real
    crossing later is not swallowed by their ids."""
    ent = grant(runtime, quantity="10")
    ingest(runtime, event(event_id="e1", quantity="7", time=NOW))
    runtime.flush.flush_all(NOW)
    lose_redis(runtime)
    ingest(runtime, event(event_id="e1", quantity="7", time=NOW), now=LATER)
    runtime.flush.flush_all(LATER)
    assert notified_thresholds(runtime, ent.id) == []
    ingest(runtime, event(event_id="e2", quantity="1", time=NOW), now=LATER)
    runtime.flush.flush_all(LATER)
    (payload,) = notified_thresholds(runtime, ent.id)
    assert json.loads(payload)["data"]["threshold_percent"] == 80


def test_a_crossing_the_committed_consumption_reaches_is_kept_with_it(runtime: Runtime) -> None:
    """e1 (7) counted again beside e2 (2): 9 of 10 is a real 80% crossing, reported
    with the consumption written (9), not Redis's (16)."""
    ent = grant(runtime, quantity="10")
    ingest(runtime, event(event_id="e1", quantity="7", time=NOW))
    runtime.flush.flush_all(NOW)
    lose_redis(runtime)
    batch = [event(event_id="e1", quantity="7", time=NOW), event(event_id="e2", quantity="2")]
    ingest(runtime, *batch, now=LATER)
    runtime.flush.flush_all(LATER)
    (payload,) = notified_thresholds(runtime, ent.id)
    data = json.loads(payload)["data"]
    assert (data["threshold_percent"], data["consumed"]) == (80, "9")


def test_a_batch_a_restored_redis_holds_again_is_left_out_without_taking_units_back(
    runtime: Runtime,
) -> None:
    """Redis restored from a snapshot taken after e1 was counted and before its
    flush: e1 waits again, and the totals hold it once. The flush leaves it out of
    the database and takes nothing off the totals (it was accepted once)."""
    ent = grant(runtime, quantity="100")
    ingest(runtime, event(event_id="e1", quantity="4", time=NOW))
    snapshot = {key: runtime.redis.dump(key) for key in meterd_keys(runtime)}
    runtime.flush.flush_all(NOW)
    lose_redis(runtime)
    for key, value in snapshot.items():
        runtime.redis.restore(key, 0, value, replace=True)
    (report,) = runtime.flush.flush_all(NOW)
    assert (report.left_out, report.counted_twice) == (1, 0)
    assert redis_used(runtime, str(ent.id)) == 4_000_000
    assert list(consumed(runtime).values()) == [Decimal(4)]
    assert_log_matches_periods(runtime)


def test_a_day_partition_created_by_a_rolled_back_flush_is_created_again(
    runtime: Runtime,
) -> None:
    """PostgreSQL: the first attempt creates the late event's day partition, the log
    refuses e1 and the transaction rolls back with the partition; the retry must
    create it again (the cache remembers partitions only once committed)."""
    if runtime.database.dialect != "postgresql":
        pytest.skip("day partitions are PostgreSQL's")
    day = (NOW - timedelta(days=20)).date()
    with runtime.database.engine.begin() as conn:
        conn.execute(text(f'DROP TABLE IF EXISTS "{partition_name(day)}"'))
    grant(runtime, quantity="100", starts_at=NOW - timedelta(days=30))
    ingest(runtime, event(event_id="e1", quantity="4", time=NOW))
    runtime.flush.flush_all(NOW)
    lose_redis(runtime)
    late = event(event_id="e2", quantity="1", time=NOW - timedelta(days=20))
    ingest(runtime, event(event_id="e1", quantity="4", time=NOW), late, now=LATER)
    (report,) = runtime.flush.flush_all(LATER)
    assert (report.applied, report.counted_twice) == (True, 1)
    assert list(consumed(runtime).values()) == [Decimal(5)]
    assert_log_matches_periods(runtime)
