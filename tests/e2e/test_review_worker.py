"""Messages the guard's review found lost or held.

Celery's strategy and its pool act on ``timelimit`` and ``eta`` after the guard
has passed the message on, where a failure is logged and the message
acknowledged (the batch lost), or held in the worker's memory. kombu's Redis
transport reads a message a dead worker held with type revival, after the guard.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
import redis
from celery import Celery

from meterd.celery_config import INGEST_QUEUE, INGEST_TASK
from meterd.runtime import Runtime
from meterd.testing import event

from .conftest import BROKER_URL, WorkerProcess
from .test_poison_messages import CUSTOMER, Publisher, counted, settle, unacked
from .test_worker_exactness import grant_customers

pytestmark = pytest.mark.e2e


@pytest.fixture
def counting(e2e_runtime: Runtime) -> Runtime:
    grant_customers(e2e_runtime, 1, ("1000000",))
    return e2e_runtime


@pytest.fixture
def publisher(producer_app: Celery) -> Publisher:
    return Publisher(producer_app)


def send_with_headers(publisher: Publisher, headers: dict[str, Any], n: int) -> None:
    batch = [event(customer=CUSTOMER, event_id=f"h-{j}", source="review") for j in range(n)]
    publisher.envelope(batch, **headers)
    publisher.valid += n
    publisher.valid_batch()


@pytest.mark.parametrize(
    "timelimit", [[0.001, None], [None, 0.001]], ids=["soft", "hard"]
)  # fmt: skip
def test_a_time_limit_a_producer_sets_neither_stops_nor_loses_its_batch(
    counting: Runtime,
    producer_app: Celery,
    worker: WorkerProcess,
    publisher: Publisher,
    timelimit: list[float | None],
) -> None:
    """A soft limit raised SoftTimeLimitExceeded in the task, a hard one killed the
    pool process: the message was acknowledged as failed, its batch never counted."""
    worker.start()
    pid = worker.pid
    send_with_headers(publisher, {"timelimit": timelimit}, 200)
    settle(counting, producer_app, publisher, letters=0)
    assert counted(counting) == publisher.valid
    assert worker.alive() and worker.pid == pid
    assert unacked(worker.env) == 0


@pytest.mark.parametrize(
    "eta",
    [
        "0001-01-01T00:00:00+14:00",  # Celery cannot make a timestamp of it
        "2024-01-01T00:00:00 +00:00",  # datetime.fromisoformat reads it, Celery does not
        "2024-01-01T00:00:00.Z",
        "9999-12-31T00:00:00+00:00",  # held in the worker's memory until then
    ],
)
def test_an_eta_a_producer_sets_neither_loses_nor_holds_its_batch(
    counting: Runtime,
    producer_app: Celery,
    worker: WorkerProcess,
    publisher: Publisher,
    eta: str,
) -> None:
    worker.start()
    pid = worker.pid
    send_with_headers(publisher, {"eta": eta}, 3)
    settle(counting, producer_app, publisher, letters=0)
    assert counted(counting) == publisher.valid
    assert worker.alive() and worker.pid == pid


def held_by_a_killed_worker(
    env: dict[str, str], body: list[Any], headers: dict[str, Any] | None, age: float
) -> None:
    """Record a message as kombu's Redis transport does for one a worker took and then
    died holding (``broker_pop.lua``): in the unacked hash and index, ``age`` seconds old."""
    tag = str(uuid.uuid4())
    message = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": tag,
            "delivery_info": {"exchange": "", "routing_key": INGEST_QUEUE},
            "delivery_mode": 2,
            "priority": 0,
        },
    }
    prefix = env["METERD_BROKER_KEY_PREFIX"]
    client = redis.Redis.from_url(BROKER_URL)
    client.hset(prefix + "unacked", tag, json.dumps([message, "", INGEST_QUEUE]))
    client.zadd(prefix + "unacked_index", {tag: time.time() - age})
    client.close()


def ingest_headers(**extra: Any) -> dict[str, Any]:
    return {"task": INGEST_TASK, "id": str(uuid.uuid4()), "lang": "py", **extra}


def test_messages_a_killed_worker_held_come_back_beside_one_with_a_kombu_tag_in_a_header(
    counting: Runtime, producer_app: Celery, worker: WorkerProcess, publisher: Publisher
) -> None:
    """kombu's visibility-timeout sweep read the unacked record with type revival: a
    header ``{"__type__": "uuid", "__value__": "x"}`` raised there at every sweep, so
    neither that message nor any held longer than it ever came back."""
    older = [event(customer=CUSTOMER, event_id=f"old-{j}", source="review") for j in range(4)]
    held_by_a_killed_worker(worker.env, [[older], {}, {}], ingest_headers(), age=120)
    tagged = [event(customer=CUSTOMER, event_id=f"tag-{j}", source="review") for j in range(3)]
    poison = ingest_headers(note={"__type__": "uuid", "__value__": "x"})
    held_by_a_killed_worker(worker.env, [[tagged], {}, {}], poison, age=60)
    publisher.valid += 7
    worker.start()
    pid = worker.pid
    settle(counting, producer_app, publisher, letters=0)
    assert counted(counting) == publisher.valid
    assert worker.alive() and worker.pid == pid
    assert unacked(worker.env) == 0


def test_a_message_with_null_headers_a_killed_worker_held_comes_back_as_a_dead_letter(
    counting: Runtime, producer_app: Celery, worker: WorkerProcess, publisher: Publisher
) -> None:
    """kombu's sweep failed to mark it redelivered ("Could not restore message") and
    removed it from the unacked records anyway: gone, not even a dead letter."""
    held_by_a_killed_worker(worker.env, [[[]], {}, {}], None, age=60)
    worker.start()
    publisher.valid_batch()
    settle(counting, producer_app, publisher, letters=1)
    (letter,) = counting.dead_letters.find(limit=10)
    assert letter.detail.startswith("unreadable message: not a Celery task message")
    assert unacked(worker.env) == 0


#: Published to the remote-control channel: none of them is a kombu message.
BROADCASTS = [
    b"null",
    b"[1, 2]",
    b'{"properties": 5}',
    b'{"__type__": "bytes", "__value__": 1}',
    b'{"body": "x", "headers": 5, "properties": {"delivery_tag": "t",'
    b' "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""}}}',
]


def test_a_broadcast_that_is_no_kombu_message_does_not_stop_the_worker(
    counting: Runtime,
    producer_app: Celery,
    worker: WorkerProcess,
    publisher: Publisher,
) -> None:
    """Celery's remote control listens on a Redis channel anyone who can publish to the
    broker can PUBLISH to: kombu read what came as a message and the worker exited
    ("Unrecoverable error: TypeError"), every worker of the broker at once."""
    worker.start()
    pid = worker.pid
    publisher.valid_batch()
    settle(counting, producer_app, publisher, letters=0)
    client = redis.Redis.from_url(BROKER_URL)
    channel = worker.env["METERD_BROKER_KEY_PREFIX"] + "/10.celery.pidbox"
    for payload in BROADCASTS:
        assert client.publish(channel, payload) == 1, payload  # remote control heard it
        time.sleep(1)
        assert worker.alive() and worker.pid == pid, payload
    client.close()
    publisher.valid_batch()
    settle(counting, producer_app, publisher, letters=0)
    assert counted(counting) == publisher.valid
    assert producer_app.control.ping(timeout=5)  # remote control still answers
    assert worker.alive() and worker.pid == pid


def test_a_held_record_too_deep_to_read_back_is_dropped_and_older_ones_come_back(
    counting: Runtime, producer_app: Celery, worker: WorkerProcess, publisher: Publisher
) -> None:
    """A record nested deeper than Python's JSON reads (Lua's cjson took it) made
    kombu's sweep raise RecursionError: the worker exited at every start. (Such an
    item was dead-lettered whole when taken, as a stand-in under a new tag; this is
    the record ``broker_pop.lua`` kept under its own tag.)"""
    older = [event(customer=CUSTOMER, event_id=f"old-{j}", source="review") for j in range(4)]
    held_by_a_killed_worker(worker.env, [[older], {}, {}], ingest_headers(), age=120)
    tag = str(uuid.uuid4())
    deep = (
        '[{"body": null, "headers": {"deep": ' + "[" * 5000 + "]" * 5000 + '}, "properties":'
        f' {{"delivery_tag": "{tag}", "delivery_info": {{"exchange": "", "routing_key":'
        f' "{INGEST_QUEUE}"}}}}}}, "", "{INGEST_QUEUE}"]'
    )
    prefix = worker.env["METERD_BROKER_KEY_PREFIX"]
    client = redis.Redis.from_url(BROKER_URL)
    client.hset(prefix + "unacked", tag, deep)
    client.zadd(prefix + "unacked_index", {tag: time.time() - 60})
    client.close()
    publisher.valid += 4
    worker.start()
    pid = worker.pid
    settle(counting, producer_app, publisher, letters=0)
    assert counted(counting) == publisher.valid
    assert worker.alive() and worker.pid == pid
    assert unacked(worker.env) == 0
