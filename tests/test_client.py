"""The producer client: batching by size and time, retries with the same ids, failures
reported, a full buffer refused, and nothing left behind on close."""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from typing import Any

import pytest

from meterd.client import BufferFullError, MeterdClient, SendRefusedError
from meterd.core.errors import InvalidError
from meterd.core.quantity import QuantityError
from meterd.testing import wait_until


class FakeTransport:
    def __init__(self, failures: int = 0, gate: threading.Event | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.attempts: list[list[str]] = []
        self.failures = failures
        self.gate = gate

    def send(self, events: list[dict[str, Any]]) -> None:
        if self.gate is not None:
            self.gate.wait(10)
        self.attempts.append([e["id"] for e in events])
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("broker down")
        self.batches.append(events)


def client_over(transport: FakeTransport, **options: Any) -> MeterdClient:
    defaults: dict[str, Any] = {"batch_size": 3, "flush_interval": 60.0, "retry_backoff": 0.01}
    return MeterdClient(transport, org="acme", source="tests", **{**defaults, **options})


def test_a_full_batch_is_sent_without_waiting_for_the_interval() -> None:
    transport = FakeTransport()
    client = client_over(transport)
    for _ in range(3):
        client.record("c-1", "api_calls", 1)
    wait_until(lambda: len(transport.batches) == 1, 5, "the full batch")
    client.close()


def test_a_partial_batch_is_sent_after_the_interval() -> None:
    transport = FakeTransport()
    client = client_over(transport, flush_interval=0.05)
    client.record("c-1", "api_calls", "0.5")
    wait_until(lambda: len(transport.batches) == 1, 5, "the interval flush")
    (event,) = transport.batches[0]
    assert (event["org"], event["subject"], event["data"]) == (
        "acme",
        "c-1",
        {"feature": "api_calls", "quantity": "0.5"},
    )
    client.close()


def test_flush_sends_everything_in_batches_of_at_most_batch_size() -> None:
    transport = FakeTransport()
    client = client_over(transport)
    ids = [client.record("c-1", "api_calls", 1) for _ in range(7)]
    assert client.flush(5)
    assert [len(b) for b in transport.batches] == [3, 3, 1]
    assert [e["id"] for b in transport.batches for e in b] == ids
    assert (client.stats.sent, client.stats.batches) == (7, 3)
    client.close()


def test_a_failed_send_is_retried_with_the_same_event_ids() -> None:
    transport = FakeTransport(failures=2)
    client = client_over(transport)
    ids = [client.record("c-1", "api_calls", 1) for _ in range(3)]
    assert client.flush(5)
    assert transport.attempts == [ids, ids, ids]
    assert (client.stats.sent, client.stats.retries, client.stats.failed) == (3, 2, 0)
    client.close()


def test_a_send_that_keeps_failing_is_reported_not_hidden() -> None:
    transport = FakeTransport(failures=100)
    reported: list[tuple[Exception, int]] = []
    client = client_over(
        transport, max_retries=2, on_error=lambda exc, batch: reported.append((exc, len(batch)))
    )
    client.record("c-1", "api_calls", 1)
    assert client.flush(5)
    assert [(type(e).__name__, n) for e, n in reported] == [("ConnectionError", 1)]
    assert client.stats.failed == 1 and len(transport.attempts) == 3
    client.close()


def test_record_refuses_a_bad_quantity_at_once() -> None:
    client = client_over(FakeTransport())
    with pytest.raises(QuantityError):
        client.record("c-1", "api_calls", "-1")
    client.close()


@pytest.mark.parametrize("quantity", ["\uff11", "1_000", " 2 ", "1e1", "+1", "NaN"])
def test_record_refuses_a_quantity_outside_the_grammar(quantity: str) -> None:
    with client_over(FakeTransport()) as client, pytest.raises(QuantityError):
        client.record("c-1", "api_calls", quantity)


def test_record_sends_a_decimal_as_plain_text_never_an_exponent() -> None:
    transport = FakeTransport()
    with client_over(transport) as client:
        client.record("c-1", "api_calls", Decimal("1E+3"))
        client.record("c-1", "api_calls", Decimal("2.500"))
    assert [e["data"]["quantity"] for e in transport.batches[0]] == ["1000", "2.5"]


def test_a_full_buffer_is_refused_after_a_short_wait_not_dropped() -> None:
    gate = threading.Event()  # the transport hangs until the gate opens
    transport = FakeTransport(gate=gate)
    client = client_over(transport, batch_size=2, max_buffered=2, block_timeout=0.05)
    for _ in range(4):  # 2 in flight (stuck), 2 buffered
        client.record("c-1", "api_calls", 1)
        time.sleep(0.02)
    started = time.monotonic()
    with pytest.raises(BufferFullError):
        client.record("c-1", "api_calls", 1)
    assert time.monotonic() - started < 1.0
    gate.set()
    assert client.flush(5)
    assert client.stats.sent == 4
    client.close()


def test_close_sends_what_is_buffered() -> None:
    transport = FakeTransport()
    with client_over(transport, batch_size=100) as client:
        client.record("c-1", "api_calls", 1)
        client.record("c-2", "api_calls", 2)
    assert sum(len(b) for b in transport.batches) == 2


def test_an_event_id_given_by_the_caller_is_kept() -> None:
    transport = FakeTransport()
    with client_over(transport) as client:
        assert client.record("c-1", "api_calls", 1, event_id="req-81") == "req-81"
    assert transport.batches[0][0]["id"] == "req-81"


def test_record_stamps_the_receive_time_on_an_event_without_one() -> None:
    from datetime import UTC, datetime, timedelta

    from meterd.core.timeutil import utcnow

    transport = FakeTransport()
    before = utcnow()
    with client_over(transport) as client:
        client.record("c-1", "api_calls", 1)
    after = utcnow()
    stamped = datetime.fromisoformat(transport.batches[0][0]["time"])
    assert stamped.utcoffset() == timedelta(0)  # RFC 3339 in UTC
    assert before <= stamped.astimezone(UTC) <= after


def test_record_keeps_the_time_the_caller_gives() -> None:
    from datetime import datetime

    transport = FakeTransport()
    when = datetime.fromisoformat("2026-11-22T10:00:00+01:00")
    with client_over(transport) as client:
        client.record("c-1", "api_calls", 1, time=when)
    assert transport.batches[0][0]["time"] == "2026-11-22T10:00:00+01:00"


class FakeApi:
    """``POST /v1/events`` answered by ``answer(events)``: (status, JSON body)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.posts: list[list[dict[str, Any]]] = []

    def transport(self) -> Any:
        import json

        import httpx

        from meterd.client import HttpTransport

        def handle(request: httpx.Request) -> httpx.Response:
            events = json.loads(request.content)
            self.posts.append(events)
            status, body = self.answer(events)
            return httpx.Response(status, json=body)

        transport = HttpTransport("http://meterd.test", "mk_test")
        transport.client = httpx.Client(
            base_url="http://meterd.test", transport=httpx.MockTransport(handle)
        )
        return transport


def invalid_when_negative(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """The API's 202: quantity "-1" is invalid, every other event is queued."""
    results = [
        {"index": i, "id": e["id"], "status": "queued", "reason": None}
        if e["data"]["quantity"] != "-1"
        else {"index": i, "id": e["id"], "status": "invalid", "reason": "quantity must be positive"}
        for i, e in enumerate(events)
    ]
    invalid = sum(r["status"] == "invalid" for r in results)
    return 202, {"queued": len(events) - invalid, "invalid": invalid, "results": results}


def record_with_one_invalid(client: MeterdClient) -> str:
    """Three events, the middle one with a quantity the API refuses; returns its id."""
    client.record("c-1", "api_calls", 1)
    bad = client.record("c-1", "api_calls", 1)
    client.record("c-1", "api_calls", 1)
    with client._lock:  # what a producer of another version might send
        next(e for e in client._buffer if e["id"] == bad)["data"]["quantity"] = "-1"
    return bad


def test_events_the_api_reports_invalid_are_counted_failed_and_given_to_on_error() -> None:
    api = FakeApi(invalid_when_negative)
    reported: list[tuple[Exception, list[dict[str, Any]]]] = []
    client = client_over(
        api.transport(), batch_size=10, on_error=lambda exc, events: reported.append((exc, events))
    )
    bad = record_with_one_invalid(client)
    assert client.flush(5)
    assert (client.stats.sent, client.stats.failed, client.stats.batches) == (2, 1, 1)
    ((exc, events),) = reported
    assert [e["id"] for e in events] == [bad]
    assert isinstance(exc, SendRefusedError) and exc.reasons == ["quantity must be positive"]
    assert len(api.posts) == 1  # not retried: the API dead-lettered it already
    client.close()


def test_events_the_api_reports_invalid_are_logged_with_their_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeApi(invalid_when_negative)
    client = client_over(api.transport(), batch_size=10)
    with caplog.at_level(logging.ERROR, logger="meterd.client"):
        bad = record_with_one_invalid(client)
        assert client.flush(5)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "meterd.client"]
    assert "1 usage event(s) not delivered" in line
    assert f"{bad}: quantity must be positive" in line
    client.close()


def test_on_rejected_of_the_http_transport_still_gets_the_api_results() -> None:
    api = FakeApi(invalid_when_negative)
    transport = api.transport()
    rejected: list[dict[str, Any]] = []
    transport.on_rejected = rejected.extend
    client = client_over(transport, batch_size=10)
    bad = record_with_one_invalid(client)
    assert client.flush(5)
    assert [(r["id"], r["status"]) for r in rejected] == [(bad, "invalid")]
    client.close()


@pytest.mark.parametrize(
    ("status", "detail"),
    [(401, "the API key is not valid"), (403, "the API key lacks the EVENTS:WRITE permission")],
)
def test_a_batch_refused_with_401_or_403_is_reported_at_once_not_retried(
    status: int, detail: str
) -> None:
    api = FakeApi(lambda _events: (status, {"status": status, "detail": detail}))
    reported: list[tuple[Exception, int]] = []
    client = client_over(
        api.transport(),
        max_retries=5,
        retry_backoff=1.0,  # a retry would make the flush miss its deadline
        on_error=lambda exc, events: reported.append((exc, len(events))),
    )
    for _ in range(3):
        client.record("c-1", "api_calls", 1)
    assert client.flush(0.9)
    ((exc, n),) = reported
    assert n == 3 and f"HTTP {status} {detail}" in str(exc)
    assert len(api.posts) == 1 and client.stats.retries == 0
    assert (client.stats.sent, client.stats.failed) == (0, 3)
    client.close()


def test_a_server_error_is_retried_with_the_same_event_ids() -> None:
    answers = [(503, {"status": 503, "detail": "Redis did not answer"})] * 2

    def answer(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        return answers.pop() if answers else invalid_when_negative(events)

    api = FakeApi(answer)
    client = client_over(api.transport())
    ids = [client.record("c-1", "api_calls", 1) for _ in range(3)]
    assert client.flush(5)
    assert [[e["id"] for e in post] for post in api.posts] == [ids, ids, ids]
    assert (client.stats.sent, client.stats.retries, client.stats.failed) == (3, 2, 0)
    client.close()


def test_a_connection_error_over_http_is_retried_with_the_same_event_ids() -> None:
    import httpx

    failures = [httpx.ConnectError("connection refused")]

    def answer(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        if failures:
            raise failures.pop()
        return invalid_when_negative(events)

    api = FakeApi(answer)
    client = client_over(api.transport())
    ids = [client.record("c-1", "api_calls", 1) for _ in range(3)]
    assert client.flush(5)
    assert [[e["id"] for e in post] for post in api.posts] == [ids, ids]
    assert (client.stats.sent, client.stats.retries) == (3, 1)
    client.close()


def test_a_raw_event_is_batched_with_its_type_and_data() -> None:
    transport = FakeTransport()
    client = client_over(transport)
    data = {"model": "gpt-4o", "usage": {"input_tokens": 1200, "output_tokens": 300}}
    event_id = client.record_event("c-1", "llm.request", data)
    client.record("c-1", "api_calls", 1)
    assert client.flush(5)
    raw, usage = transport.batches[0]
    assert (raw["id"], raw["type"], raw["subject"], raw["data"]) == (
        event_id,
        "llm.request",
        "c-1",
        data,
    )
    assert usage["type"] == "meterd.usage"
    client.close()


@pytest.mark.parametrize("event_type", ["meterd.usage", "not a type", ""])
def test_a_raw_event_type_the_meters_cannot_read_is_refused_at_once(event_type: str) -> None:
    client = client_over(FakeTransport())
    with pytest.raises((ValueError, InvalidError)):
        client.record_event("c-1", event_type, {})
    client.close()
