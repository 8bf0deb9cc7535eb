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

from meterd.domain import ContractMode, Status
from meterd.lifecycle import due_transitions
from meterd.services.resolution import ResolutionCache
from meterd.storage.repository import DueEntitlement, SqlRepository


@dataclass(slots=True)
class LifecycleReport:
    job_run_id: str
    transitions: int = 0
    entitlements: int = 0
    lost_races: int = 0
    by_target: dict[str, int] = field(default_factory=dict)


class LifecycleService:
    def __init__(self, repository: SqlRepository, resolution: ResolutionCache) -> None:
        self.repository = repository
        self.resolution = resolution

    def advance(
        self, now: datetime, *, batch_size: int = 1000, job_run_id: str | None = None
    ) -> LifecycleReport:
        """Apply what is due, at most ``batch_size`` entitlements (call again for more)."""
        report = LifecycleReport(job_run_id=job_run_id or uuid.uuid4().hex)
        due_now = self.repository.due_for_lifecycle(now, batch_size)
        terms = self.repository.latest_period_lengths(
            [due.id for due in due_now if self._renews(due)]
        )
        batch = [
            (
                due,
                due_transitions(
                    Status(due.status),
                    due.starts_at,
                    due.ends_at,
                    due.grace_until,
                    now,
                    terms.get(due.id),
                    due.next_period_at,
                ),
            )
            for due in due_now
        ]
        moved = self.repository.apply_transitions(batch, job_run_id=report.job_run_id, now=now)
        touched: set[tuple[str, str, str]] = set()
        for due, chain in batch:
            if not chain:
                continue
            if due.id not in moved:
                report.lost_races += 1
                continue
            report.entitlements += 1
            report.transitions += len(chain)
            target = chain[-1].to_status.value
            report.by_target[target] = report.by_target.get(target, 0) + 1
            if any(step.renewal_end is not None for step in chain):
                touched.add((due.org_id, due.customer_id, due.feature))
        if touched:
            self.resolution.refresh(touched, now)
        return report

    @staticmethod
    def _renews(due: DueEntitlement) -> bool:
        """Auto-renew and not a trial (a trial ends at ends_at unless converted to
        PRODUCTION). A renewed term repeats the length of the latest period."""
        return due.auto_renew and due.contract_mode != ContractMode.TRIAL.value

    def advance_all(self, now: datetime, *, batch_size: int = 1000) -> LifecycleReport:
        """Advance batch after batch until nothing is due (one job run id for all)."""
        total = LifecycleReport(job_run_id=uuid.uuid4().hex)
        while True:
            report = self.advance(now, batch_size=batch_size, job_run_id=total.job_run_id)
            total.transitions += report.transitions
            total.entitlements += report.entitlements
            total.lost_races += report.lost_races
            for target, n in report.by_target.items():
                total.by_target[target] = total.by_target.get(target, 0) + n
            if report.entitlements + report.lost_races == 0:
                return total
