"""Review of issue 20's worker: the rules a fix must keep (the real worker is in
tests/e2e/test_review_worker.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meterd.celery_config import FLUSH_TASK, INGEST_TASK
from meterd.message_guard import sanitised_headers


@pytest.mark.parametrize("task", [INGEST_TASK, FLUSH_TASK])
def test_a_time_limit_is_never_passed_on(task: str) -> None:
    """meterd's tasks have none: a producer's stops a batch midway and acknowledges it."""
    headers = sanitised_headers({"id": "t", "timelimit": [0.001, None]}, task)
    assert "timelimit" not in headers


@pytest.mark.parametrize(
    "eta",
    ["0001-01-01T00:00:00+14:00", "2024-01-01T00:00:00 +00:00", "2024-01-01T00:00:00.Z"],
)
def test_an_eta_celery_cannot_read_is_dropped(eta: str) -> None:
    assert "eta" not in sanitised_headers({"id": "t", "eta": eta}, INGEST_TASK)


def test_an_eta_further_ahead_than_a_retry_waits_is_dropped() -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    assert sanitised_headers({"id": "t", "eta": soon}, INGEST_TASK)["eta"] == soon
    far = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert "eta" not in sanitised_headers({"id": "t", "eta": far}, INGEST_TASK)
