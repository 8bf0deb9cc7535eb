"""No message, whatever its body, headers or encoding, stops a real worker or is lost.

Each test publishes raw messages with kombu (not ``send_task``, which always
writes a well-formed one) to a real worker on a real broker, with valid batches
before and after them. Every valid event is counted, every unreadable message
ends as a dead letter that keeps it and says why (or, for a body that is JSON,
as the events it carried), the queue drains, and the worker's main process is
the one that started.
"""

from __future__ import annotations

import base64
import json
import uuid
import zlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Producer

from meterd.celery_config import INGEST_QUEUE, INGEST_TASK
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.testing import event, wait_until

from .conftest import BROKER_URL, WorkerProcess, queue_depth
from .test_worker_exactness import grant_customers

pytestmark = pytest.mark.e2e

CUSTOMER = "cust-0"


@pytest.fixture
def counting(e2e_runtime: Runtime) -> Runtime:
    grant_customers(e2e_runtime, 1, ("1000000",))
    return e2e_runtime


def counted(rt: Runtime) -> Decimal:
    return sum(
        (b.consumed for b in rt.balance.balances("acme", CUSTOMER, "api_calls", utcnow())),
        Decimal(0),
    )


class Publisher:
    """Raw messages on the worker's broker, and valid batches between them."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.valid = 0

    def raw(
        self,
        body: bytes | str,
        *,
        headers: dict[str, Any] | None = None,
        content_type: str = "application/json",
        content_encoding: str = "utf-8",
    ) -> None:
        if headers is None:
            headers = {"task": INGEST_TASK, "id": str(uuid.uuid4()), "lang": "py"}
        with self.app.connection_for_write() as conn:
            Producer(conn).publish(
                body,
                routing_key=INGEST_QUEUE,
                exchange="",
                headers=headers,
                content_type=content_type,
                content_encoding=content_encoding,
                serializer=None,
                # RabbitMQ drops a message to a queue not declared yet.
                declare=[self.app.amqp.queues[INGEST_QUEUE]],
            )

    def envelope(self, events: list[Any], **headers: Any) -> None:
        """A well-formed protocol 2 body, published raw (with the given headers)."""
        base = {"task": INGEST_TASK, "id": str(uuid.uuid4()), "lang": "py", **headers}
        self.raw(json.dumps([[events], {}, {}]), headers=base)

    def valid_batch(self, n: int = 5) -> None:
        """``n`` events of 1 unit each, through the regular producer path."""
        events = [
            event(customer=CUSTOMER, event_id=f"ok-{self.valid + i}", source="poison-test")
            for i in range(n)
        ]
        self.valid += n
        self.app.send_task(INGEST_TASK, args=[events])


@pytest.fixture
def publish(producer_app: Celery) -> Iterator[Publisher]:
    yield Publisher(producer_app)


def settle(rt: Runtime, app: Celery, publisher: Publisher, letters: int) -> None:
    """Wait until every valid event is counted, the queue is empty and ``letters``
    dead letters are stored."""
    wait_until(
        lambda: counted(rt) >= publisher.valid,
        60,
        lambda: f"valid events counted: {counted(rt)} of {publisher.valid}",
    )
    wait_until(lambda: queue_depth(app) == 0, 30, "the queue drained")
    wait_until(
        lambda: len(rt.dead_letters.find(limit=1000)) >= letters,
        30,
        lambda: f"{letters} dead letters, found {len(rt.dead_letters.find(limit=1000))}",
    )


def unacked(e2e_env: dict[str, str]) -> int:
    client = redis.Redis.from_url(BROKER_URL)
    try:
        return int(client.hlen(e2e_env["METERD_BROKER_KEY_PREFIX"] + "unacked"))
    finally:
        client.close()


def unreadable_letters(rt: Runtime) -> list[dict[str, Any]]:
    """The records of the dead letters kept for whole messages."""
    records = []
    for letter in rt.dead_letters.find(limit=1000):
        payload = json.loads(letter.payload)
        if isinstance(payload, dict) and "unreadable_message" in payload:
            assert letter.reason == "invalid"
            assert letter.detail.startswith("unreadable message: ")
            records.append(payload["unreadable_message"])
    return records


def test_an_ingest_body_that_is_no_envelope_is_read_as_its_events(
    counting: Runtime, producer_app: Celery, worker: WorkerProcess, publish: Publisher
) -> None:
    """``{"a": 1}``, ``null`` and a string stopped every worker (Request.__init__);
    a list of events without the envelope was read as (args, kwargs, embed)."""
    worker.start()
    pid = worker.pid
    publish.valid_batch()
    publish.raw(json.dumps({"a": 1}))
    publish.valid_batch()
    publish.raw("null")
    publish.valid_batch()
    publish.raw(json.dumps("hello"))
    bare = [event(customer=CUSTOMER, event_id=f"bare-{i}", source="poison-test") for i in range(3)]
    publish.raw(json.dumps(bare))  # three events, no envelope: counted
    publish.valid += 3
    publish.raw(json.dumps([[[]], {"events": []}, {}]))  # arguments that do not fit
    publish.valid_batch()
    settle(counting, producer_app, publish, letters=2)
    assert counted(counting) == publish.valid
    details = {letter.detail for letter in counting.dead_letters.find(limit=100)}
    assert any("must be a JSON object, got str" in d for d in details), details
    assert any("id" in d for d in details), details  # {"a": 1} is no CloudEvent
    assert worker.alive() and worker.pid == pid
    assert unacked(worker.env) == 0


def test_a_kombu_tagged_value_in_one_event_leaves_its_batch_counted(
    counting: Runtime, producer_app: Celery, worker: WorkerProcess, publish: Publisher
) -> None:
    """kombu revived ``{"__type__": ..., "__value__": ...}`` in the whole body, and a
    tag it could not revive dropped the whole batch; meterd reads JSON as sent."""
    worker.start()
    pid = worker.pid
    batch = [event(customer=CUSTOMER, event_id=f"tag-{i}", source="poison-test") for i in range(50)]
    batch[7]["data"]["user_text"] = {"__type__": "uuid", "__value__": "x"}
    batch[8]["data"]["quantity"] = {"__type__": "decimal", "__value__": "1"}  # not a quantity
    batch[9]["data"]["when"] = {"__type__": "datetime", "__value__": "not a date"}
    publish.envelope(batch)
    publish.valid += 49
    publish.valid_batch()
    settle(counting, producer_app, publish, letters=1)
    assert counted(counting) == publish.valid
    (letter,) = counting.dead_letters.find(limit=100)
    assert json.loads(letter.payload)["id"] == "tag-8" and "quantity" in letter.detail
    assert worker.alive() and worker.pid == pid


UNREADABLE: list[tuple[str, dict[str, Any]]] = [
    ("not_json", {"body": "{{{ not json"}),
    ("not_json", {"body": b"\xff\xfe\x00binary"}),
    ("not_json", {"body": "[" * 100_000}),
    ("content_type", {"body": b"\x80\x04N.", "content_type": "application/x-python-serialize"}),
    ("content_type", {"body": "- a: 1", "content_type": "application/x-yaml"}),
    ("content_type", {"body": "[[[]], {}, {}]", "content_type": "text/plain"}),
    ("content_type", {"body": b"[[[]], {}, {}]", "content_encoding": "binary"}),
    ("unknown_task", {"body": "[[], {}, {}]", "headers": {"task": "nope", "id": "x"}}),
    ("no_task", {"body": "[[], {}, {}]", "headers": {"id": "no-task-name"}}),
    ("no_task", {"body": json.dumps({"task": INGEST_TASK, "args": []}), "headers": {}}),
    ("undecodable", {"body": b"not gzip", "headers": {"task": INGEST_TASK,
                                                      "compression": "application/x-gzip"}}),
    ("undecodable", {"body": zlib.compress(b"[" + b" " * (40 * 1024 * 1024) + b"]"),
                     "headers": {"task": INGEST_TASK, "compression": "application/x-gzip"}}),
]  # fmt: skip


def test_messages_no_task_can_read_are_kept_whole_as_dead_letters(
    counting: Runtime, producer_app: Celery, worker: WorkerProcess, publish: Publisher
) -> None:
    worker.start()
    pid = worker.pid
    for _, message in UNREADABLE:
        publish.raw(**message)
        publish.valid_batch(2)
    settle(counting, producer_app, publish, letters=len(UNREADABLE))
    assert counted(counting) == publish.valid
    records = unreadable_letters(counting)
    assert sorted(r["kind"] for r in records) == sorted(kind for kind, _ in UNREADABLE)
    binary = next(r for r in records if r["body_encoding"] == "base64")
    assert base64.b64decode(binary["body"]) == b"\xff\xfe\x00binary"
    deep = next(r for r in records if r["bytes"] == 100_000)
    assert deep["body"] == "[" * 100_000 and not deep["truncated"]
    bomb = max((r for r in records if r["kind"] == "undecodable"), key=lambda r: r["bytes"])
    assert "decompresses to more than" in bomb["reason"]
    assert worker.alive() and worker.pid == pid
    assert unacked(worker.env) == 0


def test_a_compressed_batch_is_read_and_counted(
    counting: Runtime, producer_app: Celery, worker: WorkerProcess, publish: Publisher
) -> None:
    worker.start()
    batch = [event(customer=CUSTOMER, event_id=f"gz-{i}", source="poison-test") for i in range(9)]
    body = zlib.compress(json.dumps([[batch], {}, {}]).encode())
    headers = {"task": INGEST_TASK, "id": "gz", "compression": "application/x-gzip"}
    publish.raw(body, headers=headers)
    publish.valid += 9
    settle(counting, producer_app, publish, letters=0)
    assert counted(counting) == publish.valid


def test_headers_celery_cannot_read_are_dropped_and_the_events_counted(
    counting: Runtime, producer_app: Celery, worker: WorkerProcess, publish: Publisher
) -> None:
    """No ``id`` looped the consumer on reconnects; a bad ``eta`` or ``expires`` was
    refused and the batch dropped; an ingest message never expires."""
    worker.start()
    pid = worker.pid
    cases: list[dict[str, Any]] = [
        {"id": None},
        {"id": 42},
        {"eta": "garbage"},
        {"expires": "2000-01-01T00:00:00+00:00"},  # long past: an ingest message never expires
        {"timelimit": "x"},
        {"retries": "many"},
        {"root_id": {"a": 1}},
    ]
    for i, headers in enumerate(cases):
        batch = [event(customer=CUSTOMER, event_id=f"hdr-{i}-{j}", source="poison-test")
                 for j in range(3)]  # fmt: skip
        publish.envelope(batch, **headers)
        publish.valid += 3
    publish.valid_batch()
    settle(counting, producer_app, publish, letters=0)
    assert counted(counting) == publish.valid
    assert counting.dead_letters.find(limit=100) == []
    assert worker.alive() and worker.pid == pid


def test_a_50_mb_message_is_dead_lettered_with_its_head_and_the_queue_moves_on(
    counting: Runtime, producer_app: Celery, worker: WorkerProcess, publish: Publisher
) -> None:
    worker.start()
    pid = worker.pid
    publish.valid_batch()
    body = json.dumps([[[{"padding": "x" * (50 * 1024 * 1024)}]], {}, {}])
    publish.raw(body)
    publish.valid_batch()
    settle(counting, producer_app, publish, letters=1)
    assert counted(counting) == publish.valid
    (record,) = unreadable_letters(counting)
    assert record["kind"] == "too_large" and record["truncated"]
    assert record["bytes"] == len(body)
    assert record["body"] == body[: 64 * 1024]
    assert worker.alive() and worker.pid == pid


def test_an_item_on_the_queue_list_that_is_no_kombu_message_is_dead_lettered(
    counting: Runtime, producer_app: Celery, worker: WorkerProcess, publish: Publisher
) -> None:
    """Pushed onto the Redis list by hand: not a kombu envelope at all."""
    prefix = worker.env["METERD_BROKER_KEY_PREFIX"]
    client = redis.Redis.from_url(BROKER_URL)
    worker.start()
    pid = worker.pid
    for item in (b"garbage", b'{"properties": {}}', b"null", b'{"body": "%%%", "properties":'
                 b' {"delivery_tag": "t", "delivery_info": {"exchange": "", "routing_key": "q"},'
                 b' "body_encoding": "base64"}}'):  # fmt: skip
        client.lpush(prefix + INGEST_QUEUE, item)
        publish.valid_batch()
    client.close()
    settle(counting, producer_app, publish, letters=4)
    assert counted(counting) == publish.valid
    records = unreadable_letters(counting)
    assert {r["body"] for r in records} >= {"garbage", "null", '{"properties": {}}'}
    assert worker.alive() and worker.pid == pid
    assert unacked(worker.env) == 0
