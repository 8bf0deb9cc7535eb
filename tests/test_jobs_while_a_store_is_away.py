"""A beat job whose store does not answer skips its run with one warning line (the next
tick runs it again; every job is idempotent), never a traceback at every tick."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from meterd import tasks
from meterd.logs import configure_logging
from meterd.runtime import Runtime


class Down:
    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))

        return fail


@pytest.mark.parametrize(
    ("job", "service"),
    [
        (tasks.flush, "flush"),
        (tasks.lifecycle_advance, "lifecycle"),
        (tasks.event_log_maintain, "event_log_maintenance"),
        (tasks.lifecycle_dispatch_notifications, "notifications"),
        (tasks.expire_holds, "holds"),
    ],
)
def test_a_job_whose_database_is_down_skips_its_run_with_a_warning(
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    job: Any,
    service: str,
) -> None:
    configure_logging("console")
    monkeypatch.setattr(runtime, service, Down())
    monkeypatch.setattr(tasks, "get_runtime", lambda: runtime)
    assert job.run() == {"skipped": 1}
    err = capfd.readouterr().err
    assert "job.skipped" in err and "connection refused" in err
    assert "Traceback" not in err
    assert runtime.stats.store_unavailable() == {job.name: 1}


def test_malformed_payloads_of_a_notify_message_are_counted_as_they_are_dropped(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks, "get_runtime", lambda: runtime)
    good = {"id": "n-1", "org": "acme"}
    assert tasks.notification_payloads([good, "junk", {"id": 5}]) == [good]
    assert runtime.stats.unreadable() == {"notification": 2}
