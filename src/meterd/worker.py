"""The Celery application: ``celery -A meterd.worker:app worker`` (or ``meterd worker``).

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

from typing import Any

from celery import Celery
from celery.signals import beat_init, celeryd_init, worker_ready

from meterd import embedded
from meterd.broker import reliable_url
from meterd.config import Settings, get_settings
from meterd.logs import configure_logging

INGEST_QUEUE = "meterd.ingest"
FLUSH_QUEUE = "meterd.flush"
LIFECYCLE_QUEUE = "meterd.lifecycle"
NOTIFY_QUEUE = "meterd.notify"
QUEUES = (INGEST_QUEUE, FLUSH_QUEUE, LIFECYCLE_QUEUE, NOTIFY_QUEUE)
#: How often beat publishes due notifications (webhook retries, expired leases);
#: new ones are published at once by the flush or lifecycle run that made them.
NOTIFY_DISPATCH_INTERVAL = 10.0


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
            "meterd.ingest_batch": {"queue": INGEST_QUEUE},
            "meterd.flush": {"queue": FLUSH_QUEUE},
            "meterd.lifecycle.*": {"queue": LIFECYCLE_QUEUE},
            "meterd.notify": {"queue": NOTIFY_QUEUE},
        },
        "beat_schedule": {
            "meterd.flush": {
                "task": "meterd.flush",
                "schedule": settings.flush_interval,
                # A flush that waited longer than two intervals is superseded by the next.
                "options": {"expires": max(settings.flush_interval * 2, 1.0)},
            },
            "meterd.lifecycle.advance": {
                "task": "meterd.lifecycle.advance",
                "schedule": settings.lifecycle_interval,
                "options": {"expires": max(settings.lifecycle_interval * 2, 1.0)},
            },
            "meterd.lifecycle.dispatch_notifications": {
                "task": "meterd.lifecycle.dispatch_notifications",
                "schedule": NOTIFY_DISPATCH_INTERVAL,
                "options": {"expires": NOTIFY_DISPATCH_INTERVAL * 2},
            },
        },
        # Beat with the RedBeat scheduler (``meterd beat --redbeat``, docker-compose.yml)
        # keeps its schedule in Redis behind a lock: a second beat waits instead of
        # scheduling everything twice.
        "redbeat_redis_url": None if settings.is_embedded_redis else settings.redis_url,
        "redbeat_key_prefix": f"{settings.redis_prefix}:redbeat:",
        "redbeat_lock_timeout": max(30, int(settings.flush_interval * 6)),
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        "timezone": "UTC",
    }


def worker_command(
    queues: tuple[str, ...] = (INGEST_QUEUE, FLUSH_QUEUE),
    concurrency: int = 2,
    loglevel: str = "warning",
    name: str | None = None,
) -> list[str]:
    """The argv of a `celery worker` subprocess for meterd (demo, tests, benchmarks)."""
    import sys

    command = [
        sys.executable, "-m", "celery", "-A", "meterd.worker:app", "worker",
        "-Q", ",".join(queues), "-c", str(concurrency), "-l", loglevel,
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    if name:
        command += ["-n", name]
    return command


def create_app(settings: Settings) -> Celery:
    celery_app = Celery("meterd", include=["meterd.tasks"])
    celery_app.conf.update(celery_config(settings))
    return celery_app


app = create_app(get_settings())


@celeryd_init.connect
@beat_init.connect
def _start_embedded_redis(**_: Any) -> None:
    """A worker or beat on the embedded default starts the bundled Redis it needs;
    both log in the configured format."""
    settings = get_settings()
    configure_logging(settings.log_format)
    if settings.is_embedded_redis:
        embedded.ensure_running(settings.redis_url)


@worker_ready.connect
def _start_metrics_exporter(**_: Any) -> None:
    """The worker-side Prometheus exporter, in the worker's main process."""
    settings = get_settings()
    if settings.metrics_port:
        from meterd.metrics import serve
        from meterd.runtime import get_runtime

        serve(settings.metrics_port, get_runtime, lambda: app)
