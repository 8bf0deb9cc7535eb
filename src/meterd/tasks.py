"""Celery tasks: thin shells that parse, call one service, and report.

``meterd.ingest_batch`` accepts anything a producer in any language might
send: a list of events, one event, or something malformed. Malformed input is
dead-lettered, never raised, so a bad message cannot crash or wedge a worker.
Transient store errors retry with backoff, forever: a valid event is never
dropped because Redis or the database blinked.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Task
from sqlalchemy.exc import DBAPIError

from meterd.logs import get_logger
from meterd.runtime import get_runtime
from meterd.services.ingest import IngestError
from meterd.storage.counters import CounterStoreError
from meterd.timeutil import utcnow
from meterd.worker import app

TRANSIENT_ERRORS = (IngestError, CounterStoreError, redis.RedisError, DBAPIError)
log = get_logger("meterd.tasks")


def as_event_list(events: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """Whatever arrived, as a list of payloads to validate one by one."""
    if isinstance(events, list):
        batch = list(events)
    elif events is None:
        batch = []
    else:
        batch = [events]
    batch.extend(args)
    if kwargs:
        batch.append({"unexpected task keyword arguments": sorted(kwargs)})
    return batch


@app.task(
    name="meterd.ingest_batch",
    bind=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=None,
)
def ingest_batch(self: Task, events: Any = None, *args: Any, **kwargs: Any) -> dict[str, int]:
    report = get_runtime().ingest.ingest(as_event_list(events, args, kwargs), now=utcnow())
    counts = dict(report.counts)
    log.info("ingest_batch", task_id=self.request.id, retries=self.request.retries, **counts)
    return counts


@app.task(name="meterd.flush", bind=True)
def flush(self: Task) -> dict[str, int]:
    reports = get_runtime().flush.flush_all(utcnow())
    summary = {
        "batches": len(reports),
        "periods": sum(r.periods for r in reports),
        "micros": sum(r.total_micros for r in reports),
        "resumed": sum(1 for r in reports if not r.applied),
    }
    if reports:
        log.info("flush", task_id=self.request.id, **summary)
    return summary


@app.task(name="meterd.lifecycle.advance", bind=True)
def lifecycle_advance(self: Task) -> dict[str, int]:
    """Apply every status transition that fell due (activation, grace, expiry)."""
    report = get_runtime().lifecycle.advance_all(utcnow())
    if report.transitions:
        log.info(
            "lifecycle.advance",
            task_id=self.request.id,
            job_run_id=report.job_run_id,
            transitions=report.transitions,
            lost_races=report.lost_races,
            **report.by_target,
        )
    return {"transitions": report.transitions, "lost_races": report.lost_races}
