"""The FastAPI application: ``meterd api`` serves it (uvicorn); OpenAPI at ``/docs``
(``docs_pages``: served whole, offline too).

``create_app`` takes the runtime factory and the event publisher, so tests run
it in-process over fakeredis or the real services, and the process that serves
it wires the production ones.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI

from meterd import __version__, celery_config
from meterd.api import (
    alert_rules,
    allotments,
    api_keys,
    catalog,
    console,
    corrections,
    customers,
    dead_letters,
    docs_pages,
    entitlements,
    errors,
    health,
    holds,
    notifications,
    openapi,
    portal,
    status,
    usage,
    usage_history,
    webhooks,
)
from meterd.api.body_limit import InputLimits
from meterd.api.compat import tenant, workspace, zenskar
from meterd.api.request_metrics import RequestMetrics, RequestMetricsMiddleware
from meterd.celery_config import BACKFILL_QUEUE, BACKFILL_TASK, INGEST_QUEUE, INGEST_TASK
from meterd.config import get_settings
from meterd.logs import get_logger
from meterd.ops import refuse_unsafe_redis
from meterd.runtime import STORE_ERRORS, Runtime, get_runtime
from meterd.services.intake import Publisher
from meterd.wire_json import install_json_codec


@functools.cache
def _meterd_celery_app() -> Any:
    """meterd's Celery app for this process, built on first use (publishing only),
    writing each number of an event as it was sent (``wire_json``)."""
    install_json_codec(plain_decoding=False)
    return celery_config.create_app(get_settings())


def celery_publisher() -> Publisher:
    """Publishes a batch of events as one ``meterd.ingest_batch`` message."""

    def publish(events: list[dict[str, Any]]) -> None:
        _meterd_celery_app().send_task(INGEST_TASK, args=[events], queue=INGEST_QUEUE)

    return publish


#: Publishes one batch of a backfill: (events, org, backfill id, batch number).
BackfillPublisher = Callable[[list[Any], str, str, int], None]


def celery_backfill_publisher() -> BackfillPublisher:
    """Publishes a batch of history as one ``meterd.backfill_batch`` message, on its
    own queue (``meterd.backfill``): live ingest never waits behind it."""

    def publish(events: list[Any], org: str, backfill_id: str, batch_no: int) -> None:
        _meterd_celery_app().send_task(
            BACKFILL_TASK, args=[events, org, backfill_id, batch_no], queue=BACKFILL_QUEUE
        )

    return publish


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At start: refuse an unsafe counter Redis (``UnsafeRedisError`` names what to
    set; the server exits). A Redis that does not answer yet does not stop the API:
    /readyz reports it, and checks its safety on every call."""
    if app.state.check_redis:
        runtime = app.state.runtime_factory()
        try:
            refuse_unsafe_redis(runtime.redis, runtime.settings, who="api")
        except STORE_ERRORS as exc:
            get_logger("meterd.api").warning(
                "redis safety not checked at start: Redis did not answer", error=str(exc)
            )
    yield


def create_app(
    runtime_factory: Callable[[], Runtime] = get_runtime,
    publish_events: Publisher | None = None,
    celery_app: Callable[[], Any] | None = None,
    max_body_bytes: int | None = None,
    *,
    check_redis: bool = True,
    publish_backfill: BackfillPublisher | None = None,
) -> FastAPI:
    """The API; ``check_redis=False`` skips the start-up Redis safety check (for
    apps built around a stand-in runtime that has no Redis)."""
    app = openapi.MeterdAPI(
        title="meterd",
        version=__version__,
        description="Real-time entitlement balances, atomic reserve, event intake, "
        "and the seed-compatible read endpoints.",
        lifespan=_lifespan,
        docs_url=None,  # docs_pages serves /docs and /redoc from packaged assets
        redoc_url=None,
    )
    app.state.check_redis = check_redis
    app.state.runtime_factory = runtime_factory
    app.state.publish_events = publish_events or celery_publisher()
    app.state.publish_backfill = publish_backfill or celery_backfill_publisher()
    app.state.celery_app = celery_app or _meterd_celery_app
    errors.install(app)
    if max_body_bytes is None:
        max_body_bytes = get_settings().max_body_bytes
    app.add_middleware(InputLimits, max_body_bytes=max_body_bytes)
    # outermost (added last): a request the input limits refuse is counted too
    app.state.request_metrics = RequestMetrics()
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.request_metrics)
    docs_pages.install(app)
    app.include_router(health.router)
    app.include_router(usage.router)
    app.include_router(holds.router)
    app.include_router(usage_history.router)
    app.include_router(catalog.router)
    app.include_router(entitlements.router)
    app.include_router(allotments.router)
    app.include_router(zenskar.router)
    app.include_router(tenant.router)
    app.include_router(workspace.router)
    app.include_router(api_keys.router)
    app.include_router(dead_letters.router)
    app.include_router(corrections.router)
    app.include_router(alert_rules.router)
    app.include_router(webhooks.router)
    app.include_router(notifications.router)
    portal.install(app)
    app.include_router(customers.router)
    app.include_router(status.router)
    console.install(app)
    return app
