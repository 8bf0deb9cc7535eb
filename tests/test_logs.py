"""Structured logs: JSON lines carrying the task id and each dead-lettered event's id."""

from __future__ import annotations

import json

import pytest

from meterd.core.domain import Outcome
from meterd.logs import configure_logging, get_logger
from meterd.tasks import MAX_EVENT_LOG_LINES, _log_dead_letters


@pytest.fixture(autouse=True)
def json_logs(capfd: pytest.CaptureFixture[str]) -> None:
    """JSON logs, configured after the capture starts (structlog keeps the stream)."""
    configure_logging("json")


def lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_each_dead_lettered_event_is_logged_with_its_id_and_reason(
    capfd: pytest.CaptureFixture[str],
) -> None:
    batch = [{"id": "ok-1", "source": "s"}, {"id": "bad-1", "source": "gw"}, "junk"]
    outcomes = [Outcome.ACCEPTED, Outcome.NO_ENTITLEMENT, Outcome.INVALID]
    _log_dead_letters("task-9", batch, outcomes, [None, "no grant", "not an object"])
    logged = lines(capfd.readouterr().err)
    assert [(r["event"], r["event_id"], r["outcome"]) for r in logged] == [
        ("event.dead_lettered", "bad-1", "no_entitlement"),
        ("event.dead_lettered", None, "invalid"),
    ]
    assert all(r["task_id"] == "task-9" and r["level"] == "warning" for r in logged)
    assert logged[0]["source"] == "gw" and logged[0]["reason"] == "no grant"


def test_a_flood_of_bad_events_is_capped(capfd: pytest.CaptureFixture[str]) -> None:
    n = MAX_EVENT_LOG_LINES + 30
    _log_dead_letters("t", [{"id": str(i)} for i in range(n)], [Outcome.INVALID] * n, [None] * n)
    logged = lines(capfd.readouterr().err)
    assert len(logged) == MAX_EVENT_LOG_LINES + 1
    assert logged[-1]["event"] == "event.dead_lettered.more"


def test_a_logged_exception_shows_no_local_variables(capfd: pytest.CaptureFixture[str]) -> None:
    """Rich's tracebacks showed every frame's locals: a secret, or a batch of events
    (seconds to render in a worker's main process while Redis was full)."""
    configure_logging("console")

    def fail() -> None:
        api_key = "mk_secret_that_must_not_be_logged"  # noqa: F841
        raise RuntimeError("boom")

    try:
        fail()
    except RuntimeError:
        get_logger("meterd.test").warning("failed", exc_info=True)
    err = capfd.readouterr().err
    assert "RuntimeError: boom" in err
    assert "mk_secret_that_must_not_be_logged" not in err
