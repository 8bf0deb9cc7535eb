"""``GET /v1/status``: what ``meterd status --json`` prints (``meterd.ops.gather``,
the same function): queue depths, flush lag, dead letters by reason, events by
outcome and per second, workers alive, storage figures and the counter Redis's
safety. Cluster-wide figures, so ``METRICS:VIEW`` (an operator's permission), as
``/metrics``. A part that cannot be read is null and named in ``errors``: a broker
that does not answer leaves the rest of the view intact."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from meterd.api.auth import RuntimeDep, require
from meterd.api.exact_json import ExactJSONRoute
from meterd.ops import gather
from meterd.services.api_keys import Permission, Principal

router = APIRouter(prefix="/v1", tags=["ops"], route_class=ExactJSONRoute)

#: Seconds a call may spend measuring events/s, at most (the CLI's default): the
#: call holds a server thread that long, so it stays short.
MAX_SAMPLE_SECONDS = 1.0


class QueueDepthOut(BaseModel):
    queue: str
    ready: int | None = Field(description="messages waiting; null: not read")
    unacked: int | None = Field(description="delivered, not acknowledged (Redis broker)")


class StorageOut(BaseModel):
    markers: int | None
    marker_sets: int | None
    marker_bytes: int | None
    waiting_events: int | None = Field(description="accepted events not yet flushed")
    log_rows: int | None
    log_partitions: int | None
    log_oldest: str | None
    log_bytes: int | None


class ProblemOut(BaseModel):
    setting: str
    found: str
    fix: str


class RedisSafetyOut(BaseModel):
    state: str = Field(description="safe, unsafe, unsafe_allowed or unknown")
    source: str | None
    problems: list[ProblemOut]
    warnings: list[str]


class StatusOut(BaseModel):
    queues: list[QueueDepthOut]
    flush_lag_seconds: float | None = Field(
        description="since the oldest write not yet in the database; null: all flushed"
    )
    dead_letters: dict[str, int] = Field(description="dead letters by reason (all orgs)")
    events_total: dict[str, int] = Field(description="events by outcome since the start")
    events_per_second: float | None = Field(
        description="accepted events per second over the sample; null: not sampled"
    )
    workers: list[str] | None = Field(description="workers that answered a ping; null: unknown")
    storage: StorageOut
    redis_safety: RedisSafetyOut
    errors: list[str] = Field(description="the parts that could not be read, and why")


@router.get("/status", response_model=StatusOut)
def get_status(
    request: Request,
    runtime: RuntimeDep,
    _: Annotated[Principal, Depends(require(Permission.METRICS_VIEW))],
    sample: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_SAMPLE_SECONDS,
            description="seconds to measure events/s over, at most 1 (0: not measured)",
        ),
    ] = 0.0,
) -> StatusOut:
    """Queue depth and flush lag, dead letters, throughput and workers: ``meterd status``."""
    celery_app = request.app.state.celery_app()
    return StatusOut.model_validate(gather(runtime, celery_app, sample_seconds=sample).as_json())
