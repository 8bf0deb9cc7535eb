"""An event the event log already holds, counted again because Redis lost its dedupe
marker (a restart without AOF): the flush leaves it out of the database, takes its
units back off the Redis counters, and goes on with the rest of the batch. Before,
its row broke the log's key and every flush after it failed."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from meterd.domain import Outcome
from meterd.runtime import Runtime
from meterd.storage.models import EventLogRow
from meterd.testing import event

from .conftest import NOW
from .helpers import consumed, grant


def ingest(rt: Runtime, *events: dict[str, object]) -> list[Outcome]:
    return rt.ingest.ingest(list(events), now=NOW).outcomes


def lose_redis(rt: Runtime) -> None:
    """A restart of a Redis without persistence: every key of meterd is gone."""
    for key in rt.redis.scan_iter(match=rt.redis_keys.all_pattern):
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
    assert ingest(runtime, event(event_id="e1", quantity="4")) == [Outcome.ACCEPTED]
    runtime.flush.flush_all(NOW)
    lose_redis(runtime)
    assert ingest(
        runtime, event(event_id="e1", quantity="4"), event(event_id="e2", quantity="1")
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
    assert ingest(relogged, event(event_id="e1", quantity="4")) == [Outcome.DUPLICATE]


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
