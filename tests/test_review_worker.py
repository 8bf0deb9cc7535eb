"""Review of issue 20's worker: the rules a fix must keep (the real worker is in
tests/e2e/test_review_worker.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import Reject
from kombu import compression, serialization
from redis.exceptions import OutOfMemoryError

from meterd import tasks
from meterd.celery_config import FLUSH_TASK, INGEST_TASK
from meterd.core.quantity import parse_quantity
from meterd.message_guard import MessageGuard, install_worker_codecs
from meterd.runtime import Runtime
from meterd.task_messages import sanitised_headers
from meterd.wire_json import plain_loads


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


@pytest.fixture
def worker_codecs() -> Iterator[None]:
    """The worker's JSON codec in this process, for one test (kombu's afterwards)."""
    registry = serialization.registry
    saved = (dict(registry._encoders), dict(registry._decoders))
    saved_compression = (dict(compression._encoders), dict(compression._decoders))
    install_worker_codecs(1024 * 1024)
    yield
    registry._encoders.clear()
    registry._encoders.update(saved[0])
    registry._decoders.clear()
    registry._decoders.update(saved[1])
    compression._encoders.clear()
    compression._encoders.update(saved_compression[0])
    compression._decoders.clear()
    compression._decoders.update(saved_compression[1])


def republished(value: Any) -> Any:
    """``value`` as the next worker reads it after Celery publishes it again (a retry)."""
    content_type, encoding, body = serialization.dumps(value, serializer="json")
    return serialization.loads(body, content_type, encoding)


@pytest.mark.usefixtures("worker_codecs")
@pytest.mark.parametrize("literal", ["0.00001", "0.00005"])
def test_a_json_number_quantity_counts_the_same_after_its_batch_is_retried(literal: str) -> None:
    """The worker reads a JSON number with its literal text (``0.00001``), but a retry
    publishes the batch again as the float's repr (``1e-05``), which the next try
    refuses ("write it without an exponent"): an event counted on a first try is
    dead-lettered after a database outage, and a replay refuses it again."""
    body = f'[[[{{"quantity": {literal}}}]], {{}}, null]'.encode()
    first = serialization.loads(body, "application/json", "utf-8")
    assert parse_quantity(first[0][0][0]["quantity"]) == Decimal(literal)
    again = republished(first)
    assert parse_quantity(again[0][0][0]["quantity"]) == Decimal(literal)


def test_tries_a_full_redis_refused_to_count_are_counted_once_it_takes_them(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``meterd_store_unavailable_total`` is kept in the Redis that was full: each
    try's count was refused and lost, so a Redis-full wait never showed in it, even
    once Redis had room again."""
    full = True
    hincrby = runtime.stats.client.hincrby

    def refused_while_full(*args: Any, **kwargs: Any) -> Any:
        if full:
            raise OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'.")
        return hincrby(*args, **kwargs)

    def retry(**_: Any) -> Any:
        raise Reject("the broker (the same full Redis) took no retry", requeue=False)

    tries = 0

    def work() -> str:
        nonlocal full, tries
        tries += 1
        if tries < 3:
            raise OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'.")
        full = False
        return "counted"

    monkeypatch.setattr(runtime.stats.client, "hincrby", refused_while_full)
    monkeypatch.setattr(tasks, "get_runtime", lambda: runtime)
    monkeypatch.setattr(tasks.time, "sleep", lambda _: None)
    task = SimpleNamespace(
        name=INGEST_TASK, request=SimpleNamespace(retries=0, id="t-1"), retry=retry
    )
    assert tasks.until_stores_answer(task, work) == "counted"  # type: ignore[arg-type]
    assert runtime.stats.store_unavailable() == {INGEST_TASK: 2}


def _ingest_batch(events: Any = None, *args: Any, **kwargs: Any) -> None:
    """The shape of ``meterd.tasks.ingest_batch``."""


def test_a_json_number_quantity_counts_the_same_in_a_batch_the_guard_rewrites() -> None:
    """A bare list of events is rewritten into an envelope for the pool, written with
    kombu's JSON: ``0.00001`` reaches the task as ``1e-05`` and is refused."""
    guard = MessageGuard({INGEST_TASK: SimpleNamespace(run=_ingest_batch)}, max_bytes=1 << 20)
    message = SimpleNamespace(
        headers={"task": INGEST_TASK, "id": "t-1"},
        body=b'[{"quantity": 0.00001}]',
        content_type="application/json",
        content_encoding="utf-8",
        delivery_info={"routing_key": "meterd.ingest"},
    )
    handed: list[Any] = []
    guard.take(message, lambda m: handed.append(plain_loads(m.body)), ())
    (body,) = handed  # what the pool decodes
    assert parse_quantity(body[0][0][0]["quantity"]) == Decimal("0.00001")
