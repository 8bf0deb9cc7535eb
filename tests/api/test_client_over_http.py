"""The producer client over HTTP against the real API (in process): what the API refuses
is counted failed and reported at once, never retried, never reported as sent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.client import HttpTransport, MeterdClient, SendRefusedError
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

from .conftest import Published, key_for

Reported = list[tuple[Exception, list[dict[str, Any]]]]


def http_client(
    test_client: TestClient,
    headers: dict[str, str],
    reported: Reported,
    retry_backoff: float = 0.5,
) -> MeterdClient:
    transport = HttpTransport(str(test_client.base_url), headers["x-api-key"])
    test_client.headers.update(transport.client.headers)  # the key and the batch media type
    transport.client = test_client
    return MeterdClient(
        transport,
        org="acme",
        source="http-client",
        batch_size=10,
        flush_interval=60.0,
        max_retries=3,
        retry_backoff=retry_backoff,
        on_error=lambda exc, events: reported.append((exc, events)),
    )


def test_events_the_api_finds_invalid_are_counted_failed_and_reported(
    client: TestClient, runtime: Runtime, published: Published, acme: dict[str, str]
) -> None:
    reported: Reported = []
    producer = http_client(client, acme, reported)
    producer.record("c-1", "api_calls", 1, event_id="ok-1")
    producer.record("c-1", "no such feature!", 1, event_id="bad-1")
    producer.record("c-1", "api_calls", 1, event_id="ok-2")
    assert producer.close(10)
    assert (producer.stats.sent, producer.stats.failed, producer.stats.retries) == (2, 1, 0)
    assert [e["id"] for e in published.events] == ["ok-1", "ok-2"]
    ((exc, events),) = reported
    assert isinstance(exc, SendRefusedError) and [e["id"] for e in events] == ["bad-1"]
    assert "feature" in exc.reasons[0]
    (letter,) = runtime.dead_letters.find(reason="invalid")  # the API kept it, replayable
    assert json.loads(letter.payload)["id"] == "bad-1"


@pytest.mark.parametrize(
    ("permissions", "status"),
    [((Permission.ENTITLEMENTS_VIEW,), 403), (None, 401)],
    ids=["key without EVENTS:WRITE", "key not valid"],
)
def test_a_batch_the_api_refuses_for_its_key_is_reported_at_once(
    client: TestClient,
    runtime: Runtime,
    published: Published,
    permissions: tuple[Permission, ...] | None,
    status: int,
) -> None:
    headers = (
        {"x-api-key": "mk_nope_nope"}
        if permissions is None
        else key_for(runtime, "acme", *permissions)
    )
    reported: Reported = []
    # A retry would wait 60 s, so close() finishing within its deadline shows there was
    # none; the deadline is wide because a loaded CI machine made 0.4 s too tight.
    producer = http_client(client, headers, reported, retry_backoff=60.0)
    producer.record("c-1", "api_calls", 1)
    producer.record("c-1", "api_calls", 2)
    assert producer.close(20)
    assert (producer.stats.sent, producer.stats.failed, producer.stats.retries) == (0, 2, 0)
    ((exc, events),) = reported
    assert f"HTTP {status}" in str(exc) and len(events) == 2
    assert published.events == []
