"""Rollover: the lifecycle job makes carries final (``storage/rollover.py``).

A carry becomes final once nothing is left to count in the term it carries from:
that term ended before the late window (ingest takes no older event), before the
oldest write the flush has not carried to the database yet (its consumption there
is whole), and before ``CLOCK_MARGIN`` more (hosts' clocks differ): the rule of
the backfill's closed periods. A carry stored earlier would miss a late event
into that term: money lost or given away, so ``settled_before`` errs late.

Bounded like the rest of the job: batches of at most ``batch_size`` entitlements
(one transaction each), at most ``max_batches`` a run; what is left waits for the
next run, and nothing any reader sees waits for it (the walk computes the same
figure until it is stored).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from meterd.services.backfill import CLOCK_MARGIN
from meterd.storage.rollover import RolloverStore


class RolloverFinaliser:
    def __init__(
        self, store: RolloverStore, unflushed_since: Callable[[datetime], datetime]
    ) -> None:
        """``unflushed_since``: ``BalanceService.unflushed_since``, the earliest event
        time usage not yet in the database can carry."""
        self.store = store
        self.unflushed_since = unflushed_since

    def settled_before(self, now: datetime) -> datetime:
        """The instant before which every term's consumption is final in the database."""
        return self.unflushed_since(now) - CLOCK_MARGIN

    def finalise_all(
        self, now: datetime, job_run_id: str, *, batch_size: int = 1000, max_batches: int = 100
    ) -> tuple[int, bool]:
        """Store the carries that became final; returns (how many this run stored,
        whether more may be left for the next run)."""
        before = self.settled_before(now)
        carries = 0
        for _ in range(max_batches):
            batch = self.store.finalise(before, now=now, job_run_id=job_run_id, limit=batch_size)
            carries += batch.carries
            if batch.entitlements < batch_size:
                return carries, False
        return carries, True
