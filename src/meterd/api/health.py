"""Liveness and readiness: unauthenticated, and they reveal nothing but up or down."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from meterd.api.auth import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is down"}})
def readyz(runtime: RuntimeDep) -> JSONResponse:
    """The database and Redis both answer."""
    checks = {"database": "ok", "redis": "ok"}
    try:
        with runtime.repository.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        checks["database"] = "down"
    try:
        runtime.redis.ping()
    except Exception:
        checks["redis"] = "down"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
