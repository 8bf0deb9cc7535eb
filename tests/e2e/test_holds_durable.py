"""Holds live in Redis: they survive the process that serves them killed with SIGKILL
and Redis itself killed -9 (AOF ``appendfsync always``), and a settle retried
across either kill counts once (docs/holds.md)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from meterd.core.holds import HOLD_SOURCE, HoldStatus
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.services.reserve import Reservation
from meterd.storage.database import Database
from meterd.testing import answers, free_port, wait_until

from ..conftest import NOW
from ..helpers import assert_log_matches_periods
from .kill_mid_stream import kill_mid_stream
from .servers import OwnRedis
from .test_worker_exactness import grant_customers

pytestmark = pytest.mark.e2e

VALUE = "/v1/customers/cust-0/features/api_calls"


class ApiProcess:
    """``meterd api`` in its own process, killed and started again by hand."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meterd.cli", "api", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: answers(self.base + "/healthz"), 30, "meterd api to answer")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def api(e2e_env: dict[str, str]) -> Iterator[ApiProcess]:
    server = ApiProcess(e2e_env)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.proc.terminate()
        server.proc.wait(timeout=10)


def _retried(call: Any) -> httpx.Response:
    """``call()`` until the API answers (it may be down between a kill and a start)."""
    for _ in range(200):
        try:
            response: httpx.Response = call()
            if response.status_code < 500:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the API never answered")


def test_holds_survive_the_api_process_killed_and_a_settle_retried_across_it_counts_once(
    api: ApiProcess, e2e_runtime: Runtime
) -> None:
    grant_customers(e2e_runtime, 1, ("100",))
    token, _ = e2e_runtime.api_keys.create("acme", [Permission.ALL], NOW)
    http = httpx.Client(base_url=api.base, headers={"x-api-key": token}, timeout=10)
    holds = []
    for i in range(10):
        body = {"quantity": "5", "idempotency_key": f"h-{i}", "hold_seconds": 600}
        answer = http.post(VALUE + "/reserve", json=body).json()
        assert answer["granted"], answer
        holds.append(answer["hold"]["id"])
    api.kill()
    api.start()
    assert http.get(VALUE).json()["held"] == "50"
    settled_now = 0
    for n, hold in enumerate(holds):
        url = f"/v1/holds/{hold}/settle"
        if n % 2:
            # the settle is sent and the process killed at once: it may or may not have
            # counted it; the retry below answers either way
            with contextlib.suppress(httpx.TransportError):
                http.post(url, json={"quantity": "3"}, timeout=0.05)
            api.kill()
            api.start()
        answer = _retried(lambda url=url: http.post(url, json={"quantity": "3"})).json()
        assert answer["hold"]["status"] == "settled", answer
        settled_now += answer["settled_now"]
    value = http.get(VALUE).json()
    assert (value["consumed"], value["held"], value["remaining"]) == ("30", "0", "70")
    assert settled_now >= 5  # the ones never interrupted settled on their call
    e2e_runtime.flush.flush_all(utcnow(), max_batches=100)
    logged = e2e_runtime.event_log.find([("acme", HOLD_SOURCE, hold) for hold in holds])
    assert sorted(entry.quantity for entry in logged.values()) == [Decimal(3)] * 10
    assert_log_matches_periods(e2e_runtime)


def test_holds_survive_redis_killed_with_aof_and_settles_retried_across_it_count_once(
    own_redis: OwnRedis, e2e_settings: Any, database: Database
) -> None:
    rt = Runtime(
        settings=e2e_settings,
        redis=redis.Redis(port=own_redis.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)),
        database=database,
    )
    rt.catalog.create_org("acme", "Acme", NOW)
    rt.catalog.create_feature("acme", "api_calls", now=NOW)
    grant_customers(rt, 1, ("1000",))
    now = utcnow()
    made = []
    for i in range(200):
        request = Reservation("acme", "cust-0", "api_calls", Decimal(5), f"h-{i}")
        result = rt.holds.hold(request, 3600, now)
        assert result.hold is not None
        made.append(result.hold.id)
    own_redis.kill()
    own_redis.start()
    value = rt.balance.value("acme", "cust-0", "api_calls", utcnow())
    assert (value.held, value.remaining) == (Decimal(1000), Decimal(0))

    # like a caller retrying a failed settle with the same quantity
    stream = kill_mid_stream(
        own_redis,
        made,
        lambda hold: rt.holds.settle("acme", hold, Decimal(2), utcnow()),
        kill_after=60,
    )

    assert 60 <= stream.killed_after < len(made), "the kill must land mid-stream"
    assert stream.retries > 0, "some settle must have failed while Redis was down"
    value = rt.balance.value("acme", "cust-0", "api_calls", utcnow())
    assert (value.consumed, value.held) == (Decimal(400), Decimal(0))
    assert all(rt.holds.get("acme", hold, utcnow()).status is HoldStatus.SETTLED for hold in made)
    rt.flush.flush_all(utcnow(), max_batches=100)
    assert_log_matches_periods(rt)
    rt.redis.close()
