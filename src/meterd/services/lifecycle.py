"""Lifecycle: apply the clock's status transitions in bounded batches, with an audit trail.

Safe to run twice at once (two beats, two workers): every entitlement moves by
compare-and-set, so a transition is applied and recorded once. A run that
follows a long outage catches up: every transition that fell due is applied
in order (see ``meterd.lifecycle``), renewals included: each opens its own
usage period, so usage still pending in Redis for the closed period lands
there when it is flushed.

Ingest decides eligibility by the event time against the entitlement's window
(starts_at, ends_at, grace_until), which the resolution data in Redis already
holds; so activation, grace and expiry change nothing ingest reads, and they
are right in Redis the instant they fall due, before this job runs. A renewal
does change it (a new period, a new end): after the commit, the resolution data
of every renewed customer is replaced, so ingest sees the new term at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from meterd.services.resolution import ResolutionCache
from meterd.storage.transitions import TransitionStore


@dataclass(slots=True)
class LifecycleReport:
    job_run_id: str
    transitions: int = 0
    entitlements: int = 0
    lost_races: int = 0
    #: Entitlements found due, including those whose chain turned out empty.
    seen: int = 0
    by_target: dict[str, int] = field(default_factory=dict)


class LifecycleService:
    def __init__(self, transitions: TransitionStore, resolution: ResolutionCache) -> None:
        self.transitions = transitions
        self.resolution = resolution

    def advance(
        self, now: datetime, *, batch_size: int = 1000, job_run_id: str | None = None
    ) -> LifecycleReport:
        """Apply what is due, at most ``batch_size`` entitlements (call again for more)."""
        report = LifecycleReport(job_run_id=job_run_id or uuid.uuid4().hex)
        batch = self.transitions.advance_due(now, batch_size, report.job_run_id)
        report.lost_races = batch.lost_races
        report.seen = batch.seen
        renewed: set[tuple[str, str, str]] = set()
        for due, chain in batch.applied:
            report.entitlements += 1
            report.transitions += len(chain)
            target = chain[-1].to_status.value
            report.by_target[target] = report.by_target.get(target, 0) + 1
            if any(step.renewal_end is not None for step in chain):
                renewed.add((due.org_id, due.customer_id, due.feature))
        if renewed:
            self.resolution.refresh(renewed, now)
        return report

    def advance_all(self, now: datetime, *, batch_size: int = 1000) -> LifecycleReport:
        """Advance batch after batch until nothing is due (one job run id for all)."""
        total = LifecycleReport(job_run_id=uuid.uuid4().hex)
        while True:
            report = self.advance(now, batch_size=batch_size, job_run_id=total.job_run_id)
            total.transitions += report.transitions
            total.entitlements += report.entitlements
            total.lost_races += report.lost_races
            total.seen += report.seen
            for target, n in report.by_target.items():
                total.by_target[target] = total.by_target.get(target, 0) + n
            if report.seen == 0 or report.entitlements + report.lost_races == 0:
                return total
