"""Event time is settled when the API receives an event (issue 11, item 4): stamped if it
has none, and judged by the worker's time rules at once."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi.testclient import TestClient

from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.testing import event

from .conftest import Published


def post(client: TestClient, headers: dict[str, str], *events: dict) -> dict:  # type: ignore[type-arg]
    response = client.post("/v1/events", json=list(events), headers=headers)
    assert response.status_code == 202, response.text
    result: dict = response.json()  # type: ignore[type-arg]
    return result


def timeless(**fields: object) -> dict:  # type: ignore[type-arg]
    return {k: v for k, v in event(**fields).items() if k != "time"}  # type: ignore[arg-type]


def test_an_event_without_time_is_queued_with_its_receive_time(
    client: TestClient, acme: dict[str, str], published: Published
) -> None:
    before = utcnow()
    post(client, acme, timeless())
    (queued,) = published.events
    stamped = datetime.fromisoformat(queued["time"].replace("Z", "+00:00"))
    assert before <= stamped <= utcnow()


def test_an_event_with_a_time_is_queued_with_that_time(
    client: TestClient, acme: dict[str, str], published: Published
) -> None:
    when = utcnow() - timedelta(days=3)
    post(client, acme, event(time=when))
    assert published.events[0]["time"] == when.isoformat()


def test_an_event_far_in_the_future_is_refused_at_once_not_queued(
    client: TestClient, acme: dict[str, str], published: Published, runtime: Runtime
) -> None:
    body = post(client, acme, event(time=utcnow() + timedelta(hours=12)))
    (result,) = body["results"]
    assert (result["status"], body["queued"]) == ("invalid", 0)
    assert "future" in result["reason"]
    assert published.events == []
    assert runtime.dead_letters.count_by_reason() == {"invalid": 1}


def test_an_event_older_than_the_late_window_is_refused_as_late_at_once(
    client: TestClient, acme: dict[str, str], published: Published, runtime: Runtime
) -> None:
    old = utcnow() - timedelta(seconds=runtime.settings.late_window + 60)
    (result,) = post(client, acme, event(time=old))["results"]
    assert result["status"] == "late" and published.events == []
    (letter,) = runtime.dead_letters.find(reason="late")
    assert (letter.event_id, letter.source) == ("evt-1", "tests")


def test_a_stamped_event_dead_lettered_later_keeps_its_receive_time(
    client: TestClient, acme: dict[str, str], published: Published, runtime: Runtime
) -> None:
    """The worker gets to it later (no entitlement yet): the dead letter, and so its
    replay, carry the time the API received it, not the worker's."""
    post(client, acme, timeless())
    (queued,) = published.events
    runtime.ingest.ingest([queued], now=utcnow() + timedelta(minutes=5), org="acme")
    (letter,) = runtime.dead_letters.find(reason="no_entitlement")
    assert '"time": "' + queued["time"] in letter.payload
