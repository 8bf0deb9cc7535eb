"""The FastAPI application: ``meterd api`` serves it (uvicorn); OpenAPI at ``/docs``.

``create_app`` takes the runtime factory and the event publisher, so tests run
it in-process over fakeredis or the real services, and the process that serves
it wires the production ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from meterd import __version__
from meterd.api import (
    catalog,
    entitlements,
    errors,
    health,
    seed_tenant,
    seed_workspace,
    seed_zenskar,
    usage,
)
from meterd.runtime import Runtime, get_runtime


def celery_publisher() -> Callable[[list[dict[str, Any]]], None]:
    """Publishes a batch of events as one ``meterd.ingest_batch`` message."""
    from meterd.worker import INGEST_QUEUE, app

    def publish(events: list[dict[str, Any]]) -> None:
        app.send_task("meterd.ingest_batch", args=[events], queue=INGEST_QUEUE)

    return publish


def _meterd_celery_app() -> Any:
    from meterd.worker import app

    return app


def create_app(
    runtime_factory: Callable[[], Runtime] = get_runtime,
    publish_events: Callable[[list[dict[str, Any]]], None] | None = None,
    celery_app: Callable[[], Any] | None = None,
) -> FastAPI:
    app = FastAPI(
        title="meterd",
        version=__version__,
        description="Real-time entitlement balances, atomic reserve, event intake, "
        "and the seed-compatible read endpoints.",
    )
    app.state.runtime_factory = runtime_factory
    app.state.publish_events = publish_events or celery_publisher()
    app.state.celery_app = celery_app or _meterd_celery_app
    errors.install(app)
    app.include_router(health.router)
    app.include_router(usage.router)
    app.include_router(catalog.router)
    app.include_router(entitlements.router)
    app.include_router(seed_zenskar.router)
    app.include_router(seed_tenant.router)
    app.include_router(seed_workspace.router)
    return app
