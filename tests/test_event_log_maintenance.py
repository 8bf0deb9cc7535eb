"""The hourly event-log task is a shell over one service
(``services.event_log.EventLogMaintenance``), which applies the runtime's retention."""

from __future__ import annotations

from datetime import timedelta

import pytest

from meterd import tasks
from meterd.runtime import Runtime
from meterd.services.event_log import MaintenanceReport
from meterd.testing import event

from .conftest import NOW
from .helpers import grant


def test_maintenance_keeps_the_runtime_retention(runtime: Runtime) -> None:
    retention = runtime.event_log_maintenance.retention
    assert retention == timedelta(seconds=runtime.settings.retention_seconds)


def test_maintenance_drops_what_is_past_the_retention(runtime: Runtime) -> None:
    past = NOW - runtime.event_log_maintenance.retention - timedelta(days=1)
    grant(runtime, quantity=None, starts_at=past - timedelta(days=1), ends_at=None)
    runtime.ingest.ingest([event(event_id="old", time=past)], now=past)
    runtime.flush.flush_all(past)
    report = runtime.event_log_maintenance.maintain(NOW)
    assert report.dropped >= 1


def test_the_task_reports_what_the_service_did(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks, "get_runtime", lambda: runtime)
    monkeypatch.setattr(
        runtime.event_log_maintenance, "maintain", lambda now: MaintenanceReport(3, 2)
    )
    assert tasks.event_log_maintain.run() == {"created": 3, "dropped": 2}
