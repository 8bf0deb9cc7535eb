"""The Celery worker's app: ``celery -A meterd.worker:app worker`` (or ``meterd worker``).

This module only builds the app from the settings and connects the worker's
signal handlers; the names and the configuration are in ``celery_config``, the
tasks in ``tasks``. Nothing else imports it but the tasks, so building the app
at import costs only the processes that run tasks.
"""

from __future__ import annotations

from typing import Any

from celery.signals import beat_init, celeryd_init, worker_ready

from meterd import embedded
from meterd.celery_config import create_app
from meterd.config import get_settings
from meterd.logs import configure_logging
from meterd.metrics import serve
from meterd.runtime import get_runtime

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
        serve(settings.metrics_port, get_runtime, lambda: app)
