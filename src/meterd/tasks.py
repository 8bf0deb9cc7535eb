"""Celery tasks: thin shells that parse, call one service, and report.

``meterd.ingest_batch`` accepts anything a producer in any language might
send: a list of events, one event, or something malformed. Malformed input is
dead-lettered, never raised, so a bad message cannot crash or wedge a worker
(a message Celery itself could not read never reaches a task: see
``meterd.message_guard``). Unavailable stores (``meterd.core.errors.UnavailableError``,
and the drivers' own errors) are waited out with backoff, forever
(``until_stores_answer``): a valid event is never dropped because Redis or the
database blinked, or filled up. Every other kind of error is a decision, not a
blip, and is never retried.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task
from celery.exceptions import Reject
from celery.utils.time import get_exponential_backoff_interval

from meterd.celery_config import (
    BACKFILL_TASK,
    DEAD_LETTER_MESSAGE_TASK,
    DISPATCH_NOTIFICATIONS_TASK,
    EVENT_LOG_MAINTAIN_TASK,
    EXPIRE_HOLDS_TASK,
    FLUSH_TASK,
    INGEST_TASK,
    LIFECYCLE_ADVANCE_TASK,
    MAX_BACKOFF_SECONDS,
    NOTIFY_QUEUE,
    NOTIFY_TASK,
)
from meterd.core.domain import Outcome
from meterd.core.errors import UnavailableError
from meterd.core.timeutil import utcnow
from meterd.logs import get_logger
from meterd.runtime import STORE_ERRORS, get_runtime
from meterd.task_messages import ingest_payloads
from meterd.worker import app

#: What the tasks retry: the unavailable kind, and driver errors not yet wrapped in it.
RETRY_ON: tuple[type[Exception], ...] = (UnavailableError, *STORE_ERRORS)
log = get_logger("meterd.tasks")
#: The shortest wait in place (a jittered backoff can come out near zero).
MIN_WAIT_SECONDS = 0.5

T = TypeVar("T")


def until_stores_answer(task: Task, work: Callable[[], T]) -> T:
    """``work()``, tried until no store is unavailable.

    While Redis or the database does not answer (``RETRY_ON``), the message goes
    back to the broker as a retry with backoff: Celery publishes it again and
    acknowledges this delivery, which frees the pool process (the flush that makes
    room in Redis may need it). When the broker cannot take the retry either (it is
    the same Redis, full or down), Celery would reject the message and so lose it;
    instead the task keeps the message, unacknowledged, waits here with the same
    backoff and tries the work again. A worker killed meanwhile loses nothing: the
    broker redelivers the message, and counting it again is harmless."""
    tries = 0
    uncounted = 0
    while True:
        try:
            result = work()
        except RETRY_ON as exc:
            uncounted = _count_waits(task.name, uncounted + 1)
            delay = get_exponential_backoff_interval(
                factor=1,
                retries=task.request.retries + tries,
                maximum=MAX_BACKOFF_SECONDS,
                full_jitter=True,
            )
            try:
                raise task.retry(exc=exc, countdown=delay, max_retries=None) from exc
            except Reject:
                tries += 1
                wait = max(delay, MIN_WAIT_SECONDS)
                log.warning(
                    "store.unavailable.waiting",
                    task=task.name,
                    task_id=task.request.id,
                    tries=tries,
                    wait_seconds=round(wait, 2),
                    error=str(exc)[:300],
                    reason="a store is unavailable and the broker took no retry: the message"
                    " is kept and the work tried again here",
                )
                time.sleep(wait)
        else:
            _count_waits(task.name, uncounted)
            return result


def _count_waits(task_name: str, tries: int) -> int:
    """Count ``tries`` that found a store unavailable (``meterd_store_unavailable_total``);
    returns how many are still uncounted. The counter lives in Redis: a full or absent
    Redis refuses it, so a task waiting in place counts its tries once Redis takes them."""
    if not tries:
        return 0
    try:
        get_runtime().stats.record_store_unavailable(task_name, tries)
    except Exception:
        return tries
    return 0


def as_event_list(events: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """Whatever arrived, as a list of payloads to validate one by one (the guard's
    rule: ``task_messages.ingest_payloads``)."""
    return ingest_payloads((events, *args), kwargs)


@app.task(name=INGEST_TASK, bind=True, max_retries=None)
def ingest_batch(self: Task, events: Any = None, *args: Any, **kwargs: Any) -> dict[str, int]:
    runtime = get_runtime()
    batch = as_event_list(events, args, kwargs)
    started = time.perf_counter()
    report = until_stores_answer(self, lambda: runtime.ingest.ingest(batch, now=utcnow()))
    counts = dict(report.counts)
    _quietly(
        runtime.stats.record_ingest,
        report.decided_before_counting,
        len(batch),
        time.perf_counter() - started,
    )
    log.info("ingest_batch", task_id=self.request.id, retries=self.request.retries, **counts)
    _log_dead_letters(self.request.id, batch, report.outcomes, report.reasons)
    return counts


@app.task(name=DEAD_LETTER_MESSAGE_TASK, bind=True, max_retries=None)
def dead_letter_message(self: Task, record: Any = None) -> dict[str, int]:
    """Store a message no task could read as a dead letter (``meterd.message_guard``
    turns such a message into this task, so it is acknowledged only once stored)."""
    ingest = get_runtime().ingest
    stored = until_stores_answer(self, lambda: ingest.dead_letter_message(record, utcnow()))
    return {"dead_lettered": stored}


#: Dead-lettered events logged one by one per batch (the rest are only counted).
MAX_EVENT_LOG_LINES = 20
_NOT_DEAD_LETTERS = frozenset(o for o in Outcome if not o.is_dead_letter)


def _log_dead_letters(
    task_id: str | None, batch: list[Any], outcomes: list[Any], reasons: list[str | None]
) -> None:
    """One line per dead-lettered event (event id, source, outcome, why), capped."""
    if _NOT_DEAD_LETTERS.issuperset(outcomes):  # the common batch, without a loop
        return
    logged = 0
    for payload, outcome, reason in zip(batch, outcomes, reasons, strict=True):
        if not outcome.is_dead_letter:
            continue
        if logged == MAX_EVENT_LOG_LINES:
            log.warning("event.dead_lettered.more", task_id=task_id)
            return
        event_id = payload.get("id") if isinstance(payload, dict) else None
        source = payload.get("source") if isinstance(payload, dict) else None
        log.warning(
            "event.dead_lettered",
            task_id=task_id,
            event_id=str(event_id)[:200] if event_id is not None else None,
            source=str(source)[:200] if source is not None else None,
            outcome=outcome.value,
            reason=reason,
        )
        logged += 1


def _quietly(record: Any, *args: Any) -> None:
    """Metrics never fail the work they measure (the batch is counted already)."""
    try:
        record(*args)
    except Exception as exc:  # expected while Redis is full or away: no traceback each time
        log.warning("metrics.record_failed", error=repr(exc)[:300])


def publish_notifications(payloads: list[dict[str, Any]]) -> None:
    """Publish one ``meterd.notify`` task carrying a batch of notification payloads."""
    app.send_task(NOTIFY_TASK, args=[payloads], queue=NOTIFY_QUEUE)


def dispatch_notifications() -> int:
    return get_runtime().notifications.dispatch(utcnow(), publish_notifications)


def skipped_while_a_store_is_away(job: Callable[..., dict[str, int]]) -> Callable[..., Any]:
    """A beat job whose store does not answer skips this run with one warning line
    (beat runs it again at the next tick, and every job is idempotent), instead of a
    traceback logged as an unexpected failure at every tick of an outage."""

    @functools.wraps(job)
    def run(self: Task, *args: Any, **kwargs: Any) -> dict[str, int]:
        try:
            return job(self, *args, **kwargs)
        except RETRY_ON as exc:
            _quietly(get_runtime().stats.record_store_unavailable, self.name)
            log.warning(
                "job.skipped",
                task=self.name,
                task_id=self.request.id,
                error=repr(exc)[:300],
                reason="a store is unavailable: the next scheduled run tries again",
            )
            return {"skipped": 1}

    return run


@app.task(name=FLUSH_TASK, bind=True)
@skipped_while_a_store_is_away
def flush(self: Task) -> dict[str, int]:
    runtime = get_runtime()
    started = time.perf_counter()
    reports = runtime.flush.flush_all(utcnow())
    if reports:
        _quietly(runtime.stats.record_flush, time.perf_counter() - started)
    summary = {
        "batches": len(reports),
        "periods": sum(r.periods for r in reports),
        "micros": sum(r.total_micros for r in reports),
        "resumed": sum(1 for r in reports if not r.applied),
        "crossings": sum(r.crossings for r in reports),
        "counted_twice": sum(r.counted_twice for r in reports),
    }
    if summary["counted_twice"]:
        _quietly(runtime.stats.record_counted_twice, summary["counted_twice"])
        log.warning(
            "flush found events counted twice (their Redis dedupe markers were lost: is"
            " the counter Redis running without AOF?); left out of the database and taken"
            " back off the Redis counters",
            events=summary["counted_twice"],
        )
    if summary["crossings"]:
        summary["notifications"] = dispatch_notifications()
    if reports:
        log.info("flush", task_id=self.request.id, **summary)
    return summary


@app.task(name=LIFECYCLE_ADVANCE_TASK, bind=True)
@skipped_while_a_store_is_away
def lifecycle_advance(self: Task) -> dict[str, int]:
    """Apply every status transition that fell due (activation, grace, expiry) and
    store the rollover carries that became final."""
    runtime = get_runtime()
    report = runtime.lifecycle.advance_all(utcnow())
    _quietly(runtime.stats.record_transitions, report.by_target)
    if report.transitions or report.carries_finalised:
        log.info(
            "lifecycle.advance",
            task_id=self.request.id,
            job_run_id=report.job_run_id,
            transitions=report.transitions,
            lost_races=report.lost_races,
            carries_finalised=report.carries_finalised,
            **report.by_target,
        )
    published = dispatch_notifications() if report.transitions else 0
    return {
        "transitions": report.transitions,
        "lost_races": report.lost_races,
        "carries_finalised": report.carries_finalised,
        "notifications": published,
    }


@app.task(name=EVENT_LOG_MAINTAIN_TASK, bind=True)
@skipped_while_a_store_is_away
def event_log_maintain(self: Task) -> dict[str, int]:
    """Create the event log's partitions ahead; drop what is past the retention."""
    report = get_runtime().event_log_maintenance.maintain(utcnow())
    if report.created or report.dropped:
        log.info(
            "event_log.maintain",
            task_id=self.request.id,
            created=report.created,
            dropped=report.dropped,
        )
    return {"created": report.created, "dropped": report.dropped}


@app.task(name=EXPIRE_HOLDS_TASK, bind=True)
@skipped_while_a_store_is_away
def expire_holds(self: Task) -> dict[str, int]:
    """Free the expired holds of customers nobody read since (reads free them too)."""
    seen = get_runtime().holds.expire_due(utcnow())
    if seen:
        log.info("holds.expire", task_id=self.request.id, customers=seen)
    return {"customers": seen}


@app.task(name=DISPATCH_NOTIFICATIONS_TASK, bind=True)
@skipped_while_a_store_is_away
def lifecycle_dispatch_notifications(self: Task) -> dict[str, int]:
    """Publish notifications that are due: webhook retries and expired leases."""
    published = dispatch_notifications()
    if published:
        log.info("notifications.dispatch", task_id=self.request.id, published=published)
    return {"published": published}


def notification_payloads(notifications: Any) -> list[dict[str, Any]]:
    """The well-formed payloads of a ``meterd.notify`` message (meterd publishes a
    list of them; anything else is logged, counted in
    ``meterd_unreadable_messages_total{kind="notification"}`` and dropped: a
    notification is also in the outbox, from where the dispatcher publishes it
    again if it is due)."""
    items = notifications if isinstance(notifications, list) else [notifications]
    good = [
        n
        for n in items
        if isinstance(n, dict) and isinstance(n.get("id"), str) and isinstance(n.get("org"), str)
    ]
    if len(good) != len(items):
        log.warning("notify.malformed", dropped=len(items) - len(good))
        _quietly(get_runtime().stats.record_unreadable, "notification", len(items) - len(good))
    return good


@app.task(name=NOTIFY_TASK, bind=True, max_retries=None)
def notify(self: Task, notifications: Any = None) -> dict[str, int]:
    """Deliver a batch of notifications to the webhooks of their orgs."""
    runtime = get_runtime()
    payloads = notification_payloads(notifications)
    report = until_stores_answer(self, lambda: runtime.notifications.deliver(payloads, utcnow()))
    _quietly(runtime.stats.record_notification_failures, report.failed_attempts)
    summary = {
        "delivered": report.delivered,
        "no_webhook": report.no_webhook,
        "failed_attempts": report.failed_attempts,
        "skipped": report.skipped,
    }
    log.info("notify", task_id=self.request.id, **summary)
    return summary


@app.task(name=BACKFILL_TASK, bind=True, max_retries=None)
def backfill_batch(
    self: Task, events: Any = None, org: Any = None, backfill_id: Any = None, batch_no: Any = 0
) -> dict[str, int]:
    """Count one batch of a backfill (``POST /v1/events?backfill=true``), on its own
    queue. Applied once per (backfill, batch): a redelivery counts nothing again."""
    try:
        audit_id = uuid.UUID(str(backfill_id))
    except ValueError:
        audit_id = None
    if not isinstance(org, str) or audit_id is None or not isinstance(batch_no, int):
        log.warning("backfill_batch.malformed", task_id=self.request.id, org=str(org)[:64])
        return {"malformed": 1}
    runtime = get_runtime()
    batch = events if isinstance(events, list) else [events]
    report = until_stores_answer(
        self,
        lambda: runtime.backfill.backfill(
            batch, org=org, backfill_id=audit_id, batch_no=batch_no, now=utcnow(),
            count_events=False,
        ),
    )  # fmt: skip
    counts = dict(report.counts)
    log.info(
        "backfill_batch", task_id=self.request.id, backfill_id=str(audit_id), batch_no=batch_no,
        applied_before=report.applied_before, **counts,
    )  # fmt: skip
    _log_dead_letters(self.request.id, batch, report.outcomes, report.reasons)
    return counts
