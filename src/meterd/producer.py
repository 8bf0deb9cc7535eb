"""Publishing usage events to ``meterd.ingest_batch`` over the Celery protocol.

This is the minimal, synchronous publisher the CLI, demo and benchmarks use;
it sends one message per batch (never one per event).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from typing import Any

from celery import Celery

from meterd.celery_config import INGEST_TASK
from meterd.core.timeutil import isoformat


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def usage_event(
    *,
    org: str,
    customer: str,
    feature: str,
    quantity: str,
    event_id: str,
    source: str = "meterd-producer",
    time: str | None = None,
    entitlement_id: str | None = None,
) -> dict[str, Any]:
    """A CloudEvents 1.0 usage event as meterd expects it."""
    data: dict[str, Any] = {"feature": feature, "quantity": quantity}
    if entitlement_id:
        data["entitlement_id"] = entitlement_id
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": "meterd.usage",
        "subject": customer,
        "org": org,
        "data": data,
    }
    if time:
        event["time"] = time
    return event


def stamp_receive_time(events: Iterable[Any], received_at: datetime) -> list[Any]:
    """The events, each one without ``time`` (absent or null) given ``received_at``
    (RFC 3339, UTC), as the first hop that sees an event must do. Events that
    carry a time, and payloads that are not objects, are passed on unchanged; the
    caller's dicts are not modified."""
    stamp = isoformat(received_at)
    return [
        {**e, "time": stamp} if isinstance(e, dict) and e.get("time") is None else e for e in events
    ]


def publish_batches(app: Celery, events: Iterable[dict[str, Any]], batch_size: int) -> int:
    """Send events in batches of ``batch_size``; returns the number of messages."""
    messages = 0
    with app.producer_or_acquire() as producer:
        for batch in chunked(events, batch_size):
            app.send_task(INGEST_TASK, args=[batch], producer=producer)
            messages += 1
    return messages
