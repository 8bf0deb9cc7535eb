"""Liveness and readiness: unauthenticated, and they reveal nothing but up or down,
and the names and values of the counter Redis's settings that make it unsafe."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from meterd.api.auth import RuntimeDep, require
from meterd.api.exact_json import ExactJSONRoute
from meterd.metrics import CONTENT_TYPE, registry_for, render
from meterd.ops import UNSAFE, readiness, redis_safety
from meterd.services.api_keys import Permission, Principal

router = APIRouter(tags=["health"], route_class=ExactJSONRoute)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is down, or Redis is unsafe"}})
def readyz(runtime: RuntimeDep) -> JSONResponse:
    """The database and Redis both answer, and the counter Redis is safe
    (``redis_safety.state``: ``safe``, or ``unsafe_allowed`` with
    ``METERD_UNSAFE_REDIS=1``: ready, its problems listed; ``unsafe``: not ready)."""
    checks = readiness(runtime)
    safety = redis_safety(runtime)
    ready = all(v == "ok" for v in checks.values()) and safety.state != UNSAFE
    return JSONResponse(
        {
            "status": "ok" if ready else "unavailable",
            "checks": checks,
            "redis_safety": asdict(safety),
        },
        status_code=200 if ready else 503,
    )


@router.get("/metrics", response_class=Response, tags=["ops"])
def metrics(
    request: Request,
    _: Annotated[Principal, Depends(require(Permission.METRICS_VIEW))],
) -> Response:
    """Prometheus metrics (cluster-wide; needs ``METRICS:VIEW``, an operator's
    permission). Scrape with ``authorization: {credentials: <key>}``."""
    registry = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        state = request.app.state
        registry = registry_for(state.runtime_factory, state.celery_app)
        own = getattr(state, "request_metrics", None)
        if own is not None:  # this process's requests, beside the cluster-wide numbers
            registry.register(own)
        state.metrics_registry = registry
    return Response(render(registry), media_type=CONTENT_TYPE)
