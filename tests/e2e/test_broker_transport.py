"""A worker killed after the broker handed it a message, before it read the reply.

This is the window kombu's Redis transport loses messages in; meterd's transport
takes the message and records it as unacknowledged in one script, so it
survives and is restored.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Connection

from meterd.broker import reliable_url

from .conftest import BROKER_URL, ONCE_IN_DEFAULT

pytestmark = [pytest.mark.e2e, ONCE_IN_DEFAULT]

SCRIPT = Path(__file__).with_name("pop_and_die.py")
QUEUE = "meterd.ingest"


def take_and_die(url: str, prefix: str) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), url, prefix, QUEUE], capture_output=True, timeout=30
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]


def broker_keys(prefix: str) -> tuple[int, int]:
    client = redis.Redis.from_url(BROKER_URL)
    try:
        return int(client.llen(prefix + QUEUE)), int(client.hlen(prefix + "unacked"))
    finally:
        client.close()


def test_message_taken_by_a_killed_worker_is_kept_and_restored(
    producer_app: Celery, e2e_env: dict[str, str]
) -> None:
    prefix = e2e_env["METERD_BROKER_KEY_PREFIX"]
    producer_app.send_task("meterd.ingest_batch", args=[[]])
    assert broker_keys(prefix) == (1, 0)

    take_and_die(reliable_url(BROKER_URL), prefix)
    assert broker_keys(prefix) == (0, 1), "the message must be recorded as unacked"

    # kombu's visibility-timeout sweep (timeout 0 here: everything is overdue).
    options = {"global_keyprefix": prefix, "visibility_timeout": 0}
    with Connection(reliable_url(BROKER_URL), transport_options=options) as conn:
        conn.default_channel.qos.restore_visible()
    assert broker_keys(prefix) == (1, 0), "the sweep must put it back in its queue"


def test_kombu_redis_transport_loses_a_message_in_the_same_window(
    producer_app: Celery, e2e_env: dict[str, str]
) -> None:
    """Why meterd has its own transport: the same kill with kombu's loses the message."""
    prefix = e2e_env["METERD_BROKER_KEY_PREFIX"]
    producer_app.send_task("meterd.ingest_batch", args=[[]])
    take_and_die(BROKER_URL, prefix)
    assert broker_keys(prefix) == (0, 0)
