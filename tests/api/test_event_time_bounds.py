"""An event whose time falls outside years 1 to 9999 once converted to UTC is invalid:
over HTTP (a 202 with the event reported, never a 500) and in a worker's batch (the
rest of the batch still counts)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from meterd.core.domain import Outcome
from meterd.runtime import Runtime
from meterd.testing import event

from ..conftest import NOW
from ..helpers import grant

OUT_OF_RANGE = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"]


@pytest.mark.parametrize("time", OUT_OF_RANGE)
def test_an_event_time_outside_years_1_to_9999_in_utc_is_reported_invalid(
    client: TestClient, acme: dict[str, str], time: str
) -> None:
    payload = {**event(event_id="e-1"), "time": time}
    response = client.post("/v1/events", json=[payload], headers=acme)
    assert response.status_code == 202, response.text
    (result,) = response.json()["results"]
    assert result["status"] == "invalid" and "out of range" in result["reason"]


@pytest.mark.parametrize("time", OUT_OF_RANGE)
def test_an_event_time_out_of_range_is_dead_lettered_and_its_batch_counts(
    runtime: Runtime, time: str
) -> None:
    grant(runtime)
    bad = {**event(event_id="bad"), "time": time}
    report = runtime.ingest.ingest([bad, event(event_id="good", time=NOW)], now=NOW)
    assert report.outcomes == [Outcome.INVALID, Outcome.ACCEPTED]
