"""Flush: move pending counts from Redis into the database, exactly once.

The protocol (see docs/architecture.md for each crash point):

1. ``begin_flush`` atomically renames the pending hash into the batch hash
   under a fresh batch id, or returns the batch a crashed flush left behind.
2. The batch is added to the usage periods in one database transaction that
   also inserts the batch id and writes the batch's events to the event log; a
   batch id already present means a previous flush committed it, and it is not
   added again.
   Threshold crossings that ingest recorded in the pending hash travel with the
   counts and become notification rows in that same transaction.
3. ``end_flush`` deletes the batch from Redis.

An event the log already held is left out of step 2. If it was accepted again
(a Redis without AOF lost its marker and counted its redelivery), its units are
taken back off the Redis counters in step 3, with the batch's removal.

A crash before 2 commits leaves the batch in Redis for the next flush; a crash
after 2 leaves a batch the database already has, which step 2 recognises.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from meterd.storage.counters import CounterStore
from meterd.storage.usage import UsageStore


@dataclass(frozen=True, slots=True)
class FlushReport:
    batch_id: str | None
    periods: int
    total_micros: int
    #: False when the database already had this batch (a crash after commit).
    applied: bool
    #: Threshold crossings recorded as notifications by this flush.
    crossings: int = 0
    #: Events written to the event log by this flush.
    events: int = 0
    #: Events of the batch the log already held, left out (``AppliedBatch``) ...
    left_out: int = 0
    #: ... of which accepted again by a Redis that lost their dedupe markers:
    #: their units taken back off the Redis totals.
    counted_twice: int = 0

    @property
    def empty(self) -> bool:
        return self.batch_id is None


class FlushService:
    def __init__(self, counters: CounterStore, usage: UsageStore) -> None:
        self.counters = counters
        self.usage = usage

    def flush_once(self, now: datetime) -> FlushReport:
        batch_id = self.counters.begin_flush(uuid.uuid4().hex)
        if batch_id is None:
            return FlushReport(None, 0, 0, applied=False)
        content = self.counters.read_flush_batch()
        result = self.usage.apply_flush_batch(
            batch_id, content.deltas, now, content.crossings, content.events
        )
        self.counters.end_flush(batch_id, counted_twice=result.counted_twice)
        applied = result.applied
        return FlushReport(
            batch_id,
            len(content.deltas),
            sum(content.deltas.values()),
            applied=applied,
            crossings=len(content.crossings) if applied else 0,
            events=len(content.events) - len(result.left_out) if applied else 0,
            counted_twice=len(result.counted_twice),
            left_out=len(result.left_out),
        )

    def flush_all(self, now: datetime, max_batches: int = 10) -> list[FlushReport]:
        """Flush until nothing is pending (bounded: new usage keeps arriving)."""
        reports = []
        for _ in range(max_batches):
            report = self.flush_once(now)
            if report.empty:
                break
            reports.append(report)
        return reports
