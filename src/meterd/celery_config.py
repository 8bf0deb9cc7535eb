"""Celery names and configuration: queues, task names, the app's settings.

Nothing happens at import: ``create_app`` builds an app when asked (``worker.py``
builds the worker's; producers, the API and the CLI build their own to publish).
Every task and queue name meterd uses is spelled here once.

Reliability settings, and why:

* ``task_acks_late``: a message is acknowledged only after its batch is
  counted, so a worker that dies mid-batch has its message redelivered;
  the dedupe markers make the redelivery harmless.
* ``task_reject_on_worker_lost``: a pool child killed mid-task requeues its
  message instead of marking it failed.
* ``visibility_timeout``: the Redis broker redelivers a message not acked
  within it. Ingest and flush tasks take well under a second, far below the
  default hour; tests shorten it so a SIGKILLed worker's batch comes back.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery

from meterd import embedded
from meterd.broker import reliable_url
from meterd.config import Settings
from meterd.core.redis_keys import RedisKeys

INGEST_QUEUE = "meterd.ingest"
FLUSH_QUEUE = "meterd.flush"
LIFECYCLE_QUEUE = "meterd.lifecycle"
NOTIFY_QUEUE = "meterd.notify"
#: History older than the late window (``POST /v1/events?backfill=true``): its own
#: queue, so a large import never waits in front of live usage.
BACKFILL_QUEUE = "meterd.backfill"
QUEUES = (INGEST_QUEUE, FLUSH_QUEUE, LIFECYCLE_QUEUE, NOTIFY_QUEUE, BACKFILL_QUEUE)

INGEST_TASK = "meterd.ingest_batch"
FLUSH_TASK = "meterd.flush"
LIFECYCLE_ADVANCE_TASK = "meterd.lifecycle.advance"
DISPATCH_NOTIFICATIONS_TASK = "meterd.lifecycle.dispatch_notifications"
NOTIFY_TASK = "meterd.notify"
BACKFILL_TASK = "meterd.backfill_batch"
#: The longest wait between two tries of a task whose store is unavailable: a
#: retry's ``eta`` is at most this far ahead (``message_guard`` drops a further one).
MAX_BACKOFF_SECONDS = 60
#: Stores a message no task could read as a dead letter (``meterd.message_guard``).
DEAD_LETTER_MESSAGE_TASK = "meterd.dead_letter_message"
#: Creates the event log's partitions ahead and drops those past the retention.
EVENT_LOG_MAINTAIN_TASK = "meterd.lifecycle.event_log_maintain"
EVENT_LOG_MAINTAIN_INTERVAL = 3600.0
#: Frees the expired holds of customers nobody read since (a tidy-up: a hold past its
#: expiry takes no room whether or not this ran; docs/holds.md).
EXPIRE_HOLDS_TASK = "meterd.lifecycle.expire_holds"
EXPIRE_HOLDS_INTERVAL = 60.0

#: How often beat publishes due notifications (webhook retries, expired leases);
#: new ones are published at once by the flush or lifecycle run that made them.
NOTIFY_DISPATCH_INTERVAL = 10.0

#: The Celery app module, as ``celery -A`` takes it.
APP_MODULE = "meterd.worker:app"


def broker_url_for(settings: Settings) -> str:
    """The broker URL; a Redis broker is taken through meterd's reliable transport."""
    if settings.broker_url:
        url = settings.broker_url
    elif settings.is_embedded_redis:
        url = embedded.broker_url(settings.redis_url)
    else:
        url = settings.redis_url
    return reliable_url(url)


def _transport_options(settings: Settings) -> dict[str, Any]:
    timeout = settings.visibility_timeout
    options: dict[str, Any] = {
        "visibility_timeout": timeout,
        # kombu sweeps for abandoned messages every interval * throttle seconds
        # (100 s by default); sweep at least twice per visibility timeout instead.
        "unacked_restore_interval": max(1, min(10, timeout // 2)),
        "unacked_restore_throttle": 1,
        # The sweep's mutex outlives a worker killed while holding it for this long.
        "unacked_mutex_expire": max(10, min(300, timeout)),
    }
    if settings.broker_key_prefix:
        options["global_keyprefix"] = settings.broker_key_prefix
    return options


def _beat_schedule(settings: Settings) -> dict[str, Any]:
    return {
        FLUSH_TASK: {
            "task": FLUSH_TASK,
            "schedule": settings.flush_interval,
            # A flush that waited longer than two intervals is superseded by the next.
            "options": {"expires": max(settings.flush_interval * 2, 1.0)},
        },
        LIFECYCLE_ADVANCE_TASK: {
            "task": LIFECYCLE_ADVANCE_TASK,
            "schedule": settings.lifecycle_interval,
            "options": {"expires": max(settings.lifecycle_interval * 2, 1.0)},
        },
        DISPATCH_NOTIFICATIONS_TASK: {
            "task": DISPATCH_NOTIFICATIONS_TASK,
            "schedule": NOTIFY_DISPATCH_INTERVAL,
            "options": {"expires": NOTIFY_DISPATCH_INTERVAL * 2},
        },
        EVENT_LOG_MAINTAIN_TASK: {
            "task": EVENT_LOG_MAINTAIN_TASK,
            "schedule": EVENT_LOG_MAINTAIN_INTERVAL,
            "options": {"expires": EVENT_LOG_MAINTAIN_INTERVAL},
        },
        EXPIRE_HOLDS_TASK: {
            "task": EXPIRE_HOLDS_TASK,
            "schedule": EXPIRE_HOLDS_INTERVAL,
            "options": {"expires": EXPIRE_HOLDS_INTERVAL},
        },
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": broker_url_for(settings),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": _transport_options(settings),
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 4,
        "task_default_queue": INGEST_QUEUE,
        "task_routes": {
            INGEST_TASK: {"queue": INGEST_QUEUE},
            DEAD_LETTER_MESSAGE_TASK: {"queue": INGEST_QUEUE},
            FLUSH_TASK: {"queue": FLUSH_QUEUE},
            "meterd.lifecycle.*": {"queue": LIFECYCLE_QUEUE},
            NOTIFY_TASK: {"queue": NOTIFY_QUEUE},
            BACKFILL_TASK: {"queue": BACKFILL_QUEUE},
        },
        "beat_schedule": _beat_schedule(settings),
        # Beat with the RedBeat scheduler (``meterd beat --redbeat``, docker-compose.yml)
        # keeps its schedule in Redis behind a lock: a second beat waits instead of
        # scheduling everything twice.
        "redbeat_redis_url": None if settings.is_embedded_redis else settings.redis_url,
        "redbeat_key_prefix": RedisKeys(settings.redis_prefix).redbeat_prefix,
        "redbeat_lock_timeout": max(30, int(settings.flush_interval * 6)),
        "worker_hijack_root_logger": False,
        # Every message is read by meterd before Celery parses it: none can stop a
        # worker or be dropped unseen (``meterd.message_guard``).
        "worker_consumer": "meterd.message_guard:GuardedConsumer",
        "meterd_max_message_bytes": settings.max_message_bytes,
        "enable_utc": True,
        "timezone": "UTC",
    }


def create_app(settings: Settings) -> Celery:
    """A Celery app configured for meterd. A worker started from it loads the tasks
    (``meterd.tasks``); a producer only publishes by task name."""
    celery_app = Celery("meterd", include=["meterd.tasks"])
    celery_app.conf.update(celery_config(settings))
    return celery_app


def celery_command(*arguments: str) -> list[str]:
    """The argv of ``celery -A meterd.worker:app <arguments>`` in this interpreter."""
    return [sys.executable, "-m", "celery", "-A", APP_MODULE, *arguments]


def worker_command(
    queues: tuple[str, ...] = (INGEST_QUEUE, FLUSH_QUEUE),
    concurrency: int = 2,
    loglevel: str = "warning",
    name: str | None = None,
) -> list[str]:
    """The argv of a `celery worker` subprocess for meterd (demo, tests, benchmarks)."""
    command = celery_command(
        "worker", "-Q", ",".join(queues), "-c", str(concurrency), "-l", loglevel,
        "--without-mingle", "--without-gossip",
    )  # fmt: skip
    if name:
        command += ["-n", name]
    return command
