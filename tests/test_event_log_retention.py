"""The event log's retention (issue 12): partitions ahead, old events dropped, the
retention never shorter than the late window, and the figures operators watch."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from meterd.celery_config import EVENT_LOG_MAINTAIN_TASK, celery_config
from meterd.config import Settings
from meterd.core.domain import Outcome
from meterd.metrics import registry_for, render
from meterd.ops import storage_figures
from meterd.runtime import Runtime
from meterd.testing import event

from .conftest import NOW
from .helpers import grant

DAY = timedelta(days=1)


def logged(rt: Runtime) -> int:
    return len(
        rt.event_log.page(
            "acme", "cust-1", feature=None, start=NOW - 90 * DAY, end=NOW + DAY,
            after=None, limit=1000,
        )
    )  # fmt: skip


def test_a_retention_shorter_than_the_late_window_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least METERD_LATE_WINDOW"):
        Settings(_env_file=None, late_window=30 * 86400, event_retention=29 * 86400)  # type: ignore[call-arg]


def test_the_retention_defaults_to_the_late_window_and_a_day() -> None:
    settings = Settings(_env_file=None, late_window=10 * 86400)  # type: ignore[call-arg]
    assert settings.retention_seconds == 11 * 86400


def test_beat_maintains_the_event_log_hourly() -> None:
    settings = Settings(_env_file=None, redis_url="redis://h:6379/0")  # type: ignore[call-arg]
    entry = celery_config(settings)["beat_schedule"][EVENT_LOG_MAINTAIN_TASK]
    assert entry["schedule"] == 3600.0


def test_events_past_the_retention_leave_the_log_and_recent_ones_stay(runtime: Runtime) -> None:
    grant(runtime, quantity=None, starts_at=NOW - 60 * DAY, ends_at=None)
    runtime.ingest.ingest(
        [event(event_id="old", time=NOW - 20 * DAY), event(event_id="new", time=NOW - DAY)],
        now=NOW,
    )
    runtime.flush.flush_all(NOW)
    assert logged(runtime) == 2
    runtime.event_log.maintain(NOW, retention=10 * DAY)
    rows = runtime.event_log.page(
        "acme", "cust-1", feature=None, start=NOW - 90 * DAY, end=NOW + DAY, after=None, limit=9
    )
    assert [r.event_id for r in rows] == ["new"]


def test_partitions_are_created_ahead_and_dropped_past_the_retention(runtime: Runtime) -> None:
    if runtime.database.dialect != "postgresql":
        pytest.skip("partitions are PostgreSQL's (SQLite deletes rows: the test above)")
    runtime.event_log.maintain(NOW, retention=5 * DAY, ahead_days=3)
    first = runtime.event_log.figures()
    assert first.partitions >= 5 + 3
    assert first.oldest is not None and first.oldest.date() <= (NOW - 5 * DAY).date()
    runtime.event_log.maintain(NOW + 4 * DAY, retention=5 * DAY, ahead_days=3)
    later = runtime.event_log.figures()
    assert later.oldest is not None and later.oldest.date() > first.oldest.date()
    assert later.oldest.date() >= (NOW - DAY).date()


def test_a_day_the_maintenance_dropped_is_created_again_for_an_event_of_that_day(
    runtime: Runtime,
) -> None:
    grant(runtime, quantity=None, starts_at=NOW - 60 * DAY, ends_at=None)
    runtime.ingest.ingest([event(event_id="warm", time=NOW - 3 * DAY)], now=NOW)
    runtime.flush.flush_all(NOW)
    runtime.event_log.maintain(NOW, retention=DAY)  # a shorter retention, later raised
    runtime.ingest.ingest([event(event_id="back", time=NOW - 3 * DAY)], now=NOW)
    runtime.flush.flush_all(NOW)
    rows = runtime.event_log.page(
        "acme", "cust-1", feature=None, start=NOW - 90 * DAY, end=NOW + DAY, after=None, limit=9
    )
    assert [r.event_id for r in rows] == ["back"]


def test_only_whole_expired_partitions_are_dropped(runtime: Runtime) -> None:
    if runtime.database.dialect != "postgresql":
        pytest.skip("partitions are PostgreSQL's (SQLite deletes rows by time)")
    grant(runtime, quantity=None, starts_at=NOW - 60 * DAY, ends_at=None)
    cutoff = NOW - 5 * DAY  # 10:00 on its day
    runtime.ingest.ingest(
        [
            event(event_id="day-before", time=cutoff - 11 * timedelta(hours=1)),
            event(event_id="same-day-older", time=cutoff - timedelta(hours=1)),
            event(event_id="kept", time=cutoff + timedelta(hours=1)),
        ],
        now=NOW,
    )
    runtime.flush.flush_all(NOW)
    runtime.event_log.maintain(NOW, retention=5 * DAY)
    rows = runtime.event_log.page(
        "acme", "cust-1", feature=None, start=NOW - 90 * DAY, end=NOW + DAY, after=None, limit=9
    )
    # The cutoff's own day is not wholly past the retention: its partition stays.
    assert [r.event_id for r in rows] == ["same-day-older", "kept"]


def test_an_event_older_than_the_retention_is_late(runtime: Runtime) -> None:
    grant(runtime, quantity=None, starts_at=NOW - 90 * DAY, ends_at=None)
    retention = timedelta(seconds=runtime.settings.retention_seconds)
    result = runtime.ingest.ingest([event(event_id="old", time=NOW - retention)], now=NOW)
    assert result.outcomes == [Outcome.LATE]


def test_status_and_metrics_show_markers_waiting_events_and_the_log(runtime: Runtime) -> None:
    grant(runtime, quantity=None, starts_at=NOW - 60 * DAY, ends_at=None)
    runtime.ingest.ingest([event(event_id=f"m{i}") for i in range(30)], now=NOW)
    waiting = storage_figures(runtime)
    assert (waiting.markers, waiting.waiting_events) == (30, 30)
    runtime.flush.flush_all(NOW)
    flushed = storage_figures(runtime)
    assert flushed.waiting_events == 0
    if runtime.database.dialect == "sqlite":  # PostgreSQL's row count is an estimate
        assert flushed.log_rows == 30
    text = render(registry_for(lambda: runtime, lambda: None)).decode()
    assert "meterd_dedupe_markers 30.0" in text
    assert "meterd_events_waiting 0.0" in text
