"""Real processes: a `celery worker` subprocess, a real Redis broker, the test database.

The broker lives on the machine's Redis (db 10) under a per-test key prefix,
so these tests touch only their own keys. Counters go to db 9, also under a
per-test prefix. The worker's visibility timeout is 5 s, so a SIGKILLed
worker's unacknowledged batches come back within the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from meterd.celery_config import FLUSH_QUEUE, INGEST_QUEUE, create_app, worker_command
from meterd.config import Settings
from meterd.ops import queue_depths
from meterd.runtime import Runtime
from meterd.storage.database import Database

from ..conftest import BACKEND, NOW, REAL_REDIS_URL, delete_keys, real_redis_client, require
from .browser_support import browser, live_api  # noqa: F401 (fixtures for browser tests)
from .servers import OwnRedis

#: A module whose processes use no configured store (the embedded default's own
#: SQLite and Redis, or the broker alone) runs the same in both configurations: it
#: runs once, in the default one (CI's real pass would repeat it word for word).
ONCE_IN_DEFAULT = pytest.mark.skipif(
    BACKEND == "real",
    reason="uses no configured store (the embedded default, or the broker alone):"
    " it runs once, in the default configuration",
)

#: A test at scale (100,000 events through a real worker) runs once, in the real
#: configuration (production's Redis and PostgreSQL): the counting it proves happens
#: in Redis, the same in both, and the default configuration covers the same paths at
#: smaller scale in the other tests of its module (CI's budget, .ci/run).
AT_SCALE_ONCE = pytest.mark.skipif(
    BACKEND != "real",
    reason="a test at scale: it runs once, in the real configuration",
)

BROKER_URL = os.environ.get("METERD_TEST_BROKER_URL", "redis://127.0.0.1:6379/10")
VISIBILITY_TIMEOUT = 5


_started_groups: list[int] = []


@pytest.fixture(scope="session", autouse=True)
def _no_worker_outlives_the_session() -> Iterator[None]:
    """Whatever a failing test left running, its worker process groups go at the end."""
    yield
    for group in _started_groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


class WorkerProcess:
    """A `celery worker` in its own process group, killable for real."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        concurrency: int = 2,
        queues: tuple[str, ...] = (INGEST_QUEUE, FLUSH_QUEUE),
    ) -> None:
        self.env = env
        self.log = log
        self.concurrency = concurrency
        self.queues = queues
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        command = worker_command(
            self.queues, concurrency=self.concurrency, name=f"w{uuid.uuid4().hex[:6]}@%h"
        )
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _started_groups.append(self.proc.pid)
        return self

    @property
    def pid(self) -> int:
        """The main process's id (a worker that died and was started again has another)."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: main process and pool children."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def broker_url() -> str:
    """The Redis broker (db 10); a module can override this fixture with another broker."""
    return BROKER_URL


@pytest.fixture
def amqp_broker_url(redis_prefix: str) -> Iterator[str]:
    """A RabbitMQ virtual host of this test's own, deleted afterwards."""
    vhost = f"meterd-{redis_prefix}"
    try:
        subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True)
        subprocess.run(
            ["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        require("RabbitMQ (rabbitmqctl)", exc)
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    subprocess.run(["rabbitmqctl", "delete_vhost", vhost], check=False, capture_output=True)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A private redis-server with AOF ``appendfsync always``, to kill -9 and start
    again (``servers.OwnRedis``); killed at the end of the test if still running."""
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.kill()


@pytest.fixture
def e2e_env(database_url: str, redis_prefix: str, broker_url: str) -> Iterator[dict[str, str]]:
    client = real_redis_client()
    broker_prefix = f"{redis_prefix}-q:"
    env = {
        **os.environ,
        "METERD_DATABASE_URL": database_url,
        "METERD_REDIS_URL": REAL_REDIS_URL,
        "METERD_REDIS_PREFIX": redis_prefix,
        "METERD_BROKER_URL": broker_url,
        "METERD_BROKER_KEY_PREFIX": broker_prefix,
        "METERD_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        # The machine's shared Redis has no AOF: workers, beat and the API would refuse it.
        "METERD_UNSAFE_REDIS": "1",
    }
    yield env
    delete_keys(client, f"{redis_prefix}:*")
    broker = redis.Redis.from_url(BROKER_URL)
    delete_keys(broker, f"{broker_prefix}*")
    broker.close()
    client.close()


@pytest.fixture
def e2e_settings(e2e_env: dict[str, str]) -> Settings:
    return Settings(
        database_url=e2e_env["METERD_DATABASE_URL"],
        redis_url=e2e_env["METERD_REDIS_URL"],
        redis_prefix=e2e_env["METERD_REDIS_PREFIX"],
        broker_url=e2e_env["METERD_BROKER_URL"],
        broker_key_prefix=e2e_env["METERD_BROKER_KEY_PREFIX"],
        visibility_timeout=VISIBILITY_TIMEOUT,
        unsafe_redis=True,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def e2e_runtime(e2e_settings: Settings, database: Database) -> Iterator[Runtime]:
    rt = Runtime(
        settings=e2e_settings,
        redis=redis.Redis.from_url(REAL_REDIS_URL),
        database=database,
    )
    rt.catalog.create_org("acme", "Acme", NOW)
    rt.catalog.create_feature("acme", "api_calls", now=NOW)
    yield rt
    rt.redis.close()


@pytest.fixture
def producer_app(e2e_settings: Settings) -> Iterator[Celery]:
    app = create_app(e2e_settings)
    yield app
    app.close()


@pytest.fixture
def worker(e2e_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(e2e_env, tmp_path / "worker.log")
    yield process
    process.stop()
    if os.environ.get("METERD_SHOW_WORKER_LOG"):
        print((tmp_path / "worker.log").read_text())


def queue_depth(app: Celery, queue: str = "meterd.ingest") -> int:
    """Messages waiting in a queue (not counting those delivered but unacked), as
    ``meterd status`` counts them (``ops.queue_depths``). Not kombu's passive
    declare: on a Redis broker it asks EXISTS without the global key prefix, finds
    no queue and answers 0 however many wait."""
    ready = queue_depths(app, (queue,))[0].ready
    assert ready is not None, "a broker that does not say how many messages wait"
    return ready
