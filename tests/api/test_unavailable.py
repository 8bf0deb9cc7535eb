"""A store that does not answer is 503 with Retry-After, never a 500: whether a
service raises the unavailable kind or a driver error escapes unwrapped."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from meterd.runtime import Runtime
from meterd.services.balance import BalanceError
from meterd.storage.counters import CounterStoreError, ScriptCode

from ..helpers import grant

VALUE = "/v1/customers/cust-1/features/api_calls"
RESERVE = VALUE + "/reserve"


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 503


def test_reserve_answers_503_when_resolution_data_keeps_vanishing(
    client: TestClient, runtime: Runtime, acme: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    grant(runtime)
    monkeypatch.setattr(
        runtime.counters,
        "add_batch",
        lambda events, **_: [ScriptCode.MISSING_RESOLUTION] * len(events),
    )
    response = client.post(RESERVE, json={"quantity": "1", "idempotency_key": "k"}, headers=acme)
    assert_unavailable(response)
    assert "resolution data" in response.json()["detail"]


def test_reserve_answers_503_when_redis_refuses_the_count(
    client: TestClient, runtime: Runtime, acme: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    grant(runtime)

    def refuse(*_: Any, **__: Any) -> None:
        raise CounterStoreError("counting a batch failed: connection refused")

    monkeypatch.setattr(runtime.counters, "add_batch", refuse)
    response = client.post(RESERVE, json={"quantity": "1", "idempotency_key": "k"}, headers=acme)
    assert_unavailable(response)


def test_the_value_answers_503_when_flushes_keep_racing_the_read(
    client: TestClient, runtime: Runtime, acme: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    grant(runtime)

    def racing(*_: Any, **__: Any) -> None:
        raise BalanceError("flushes kept racing the read")

    monkeypatch.setattr(runtime.balance, "current", racing)
    assert_unavailable(client.get(VALUE, headers=acme))


def test_a_redis_error_no_store_wrapped_answers_503(
    client: TestClient, runtime: Runtime, acme: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    grant(runtime)

    def down(*_: Any, **__: Any) -> None:
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(runtime.counters, "resolution_entry", down)
    assert_unavailable(client.get(VALUE, headers=acme))
