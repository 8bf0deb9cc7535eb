"""The Celery worker's app: ``celery -A meterd.worker:app worker`` (or ``meterd worker``).

This module only builds the app from the settings and connects the worker's
signal handlers; the names and the configuration are in ``celery_config``, the
tasks in ``tasks``. Nothing else imports it but the tasks, so building the app
at import costs only the processes that run tasks.
"""

from __future__ import annotations

from typing import Any

import redis
from celery.signals import beat_init, celeryd_init, worker_ready

from meterd import embedded
from meterd.celery_config import create_app
from meterd.config import get_settings
from meterd.core.errors import MeterdError
from meterd.logs import configure_logging, get_logger
from meterd.message_guard import install_worker_codecs
from meterd.metrics import serve
from meterd.ops import refuse_unsafe_redis
from meterd.runtime import get_runtime, redis_client_for

app = create_app(get_settings())
# The worker reads JSON as sent, and decompresses within the size bound, in its
# main process and in the pool it forks.
install_worker_codecs(get_settings().max_message_bytes)


def _count_unreadable(kind: str) -> None:
    """``meterd_unreadable_messages_total``: never fails the message it counts."""
    try:
        get_runtime().stats.record_unreadable(kind)
    except Exception as exc:  # expected while Redis is full or away: no traceback each time
        get_logger("meterd.worker").warning("metrics.record_failed", error=repr(exc)[:300])


app.conf.meterd_on_unreadable = _count_unreadable


@celeryd_init.connect
@beat_init.connect
def _start_embedded_redis(**_: Any) -> None:
    """A worker or beat on the embedded default starts the bundled Redis it needs;
    both log in the configured format."""
    settings = get_settings()
    configure_logging(settings.log_format)
    if settings.is_embedded_redis:
        embedded.ensure_running(settings.redis_url)


#: Exit status of a worker or beat refused for an unsafe Redis (EX_CONFIG of sysexits.h).
EXIT_UNSAFE_REDIS = 78
#: Exit status when the counter Redis did not answer at start (EX_TEMPFAIL).
EXIT_REDIS_UNANSWERED = 75
#: How long a starting worker or beat waits for the counter Redis to answer.
REDIS_START_WAIT_SECONDS = 30.0


@celeryd_init.connect
@beat_init.connect
def _refuse_unsafe_redis(sender: Any = None, **_: Any) -> None:
    """A worker or beat does not start on an evicting or non-persistent counter Redis
    (``meterd.storage.redis_safety``), nor on one that does not answer within
    ``REDIS_START_WAIT_SECONDS``: it exits with the reason. Celery swallows
    exceptions of signal handlers, so this exits with ``SystemExit`` after logging why."""
    who = "worker" if isinstance(sender, str) else "beat"  # the worker sends its hostname
    settings = get_settings()
    client = redis_client_for(settings)
    try:
        refuse_unsafe_redis(client, settings, who=who, wait_seconds=REDIS_START_WAIT_SECONDS)
    except (MeterdError, redis.RedisError) as exc:
        unanswered = isinstance(exc, redis.RedisError)
        reason = f"the counter Redis did not answer: {exc}" if unanswered else str(exc)
        get_logger("meterd.worker").critical(f"{who} not started", reason=reason)
        raise SystemExit(EXIT_REDIS_UNANSWERED if unanswered else EXIT_UNSAFE_REDIS) from exc
    finally:
        client.close()


@worker_ready.connect
def _start_metrics_exporter(**_: Any) -> None:
    """The worker-side Prometheus exporter, in the worker's main process."""
    settings = get_settings()
    if settings.metrics_port:
        serve(settings.metrics_port, get_runtime, lambda: app)
