"""Lifecycle: record the clock's status transitions in bounded batches, with an audit trail.

What an entitlement may be used for at an instant never waits for this job:
``meterd.core.lifecycle.status_at`` and ``period_at`` derive it from the calendar,
and ingest, reserve and every read use them. The job *records* what fell due
(activation, grace, expiry, renewals, PAY_PER_USE months): the audit rows,
their notifications, the stored status the lists filter on, and the period
rows renewals open (ingest opens the same rows itself when usage arrives
first; both insert-or-ignore).

Bounded: a batch is at most ``batch_size`` entitlements and
``storage.transitions.MAX_STEPS_PER_BATCH`` steps in one transaction (each
entitlement's chain at most about 50 listed terms: older ones are one summary
step), and a run at most ``MAX_BATCHES_PER_RUN`` batches.

It also makes rollover carries final (``services/rollover.py``), once the terms
they carry from can take no more usage, after the renewals it recorded; the
report counts them (``carries_finalised``).

Safe to run twice at once (two beats, two workers): every entitlement moves by
compare-and-set, so a transition is applied and recorded once. A run that
follows a long outage catches up: every transition that fell due is applied
in order, each stamped with the instant it fell due. Nothing it does changes
what ingest reads (the resolution data holds the term and computes renewals),
so it refreshes no cache, but one figure: the ``allotted`` a parent's value read
shows counts children not recorded TERMINATED, so the parents of children it
terminates (a void dated ahead that fell due) have their data rewritten after
the batch commits (``on_terminated``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from meterd.core.domain import Status
from meterd.services.rollover import RolloverFinaliser
from meterd.storage.transitions import Chain, TransitionStore

#: A dry run looks at this many due entitlements at most (nothing is applied, so
#: batches cannot move on: the same rows would be found again).
DRY_RUN_LIMIT = 10_000

#: One run applies at most this many batches (transactions); what is still due then
#: waits for the next run (beat runs the job every METERD_LIFECYCLE_INTERVAL).
#: Nothing a reader sees waits for it: state is a function of the clock.
MAX_BATCHES_PER_RUN = 100


@dataclass(slots=True)
class LifecycleReport:
    job_run_id: str
    transitions: int = 0
    entitlements: int = 0
    lost_races: int = 0
    #: Entitlements found due, including those whose chain turned out empty.
    seen: int = 0
    by_target: dict[str, int] = field(default_factory=dict)
    #: What was applied (or, on a dry run, would be), in order.
    applied: list[Chain] = field(default_factory=list)
    dry_run: bool = False
    #: The run stopped at its last allowed batch: more may be due (the next run does it).
    more_due: bool = False
    #: Rollover carries this run stored as final, each audited (``services/rollover.py``).
    carries_finalised: int = 0

    def add(self, other: LifecycleReport) -> None:
        self.transitions += other.transitions
        self.entitlements += other.entitlements
        self.lost_races += other.lost_races
        self.seen += other.seen
        self.applied += other.applied
        for target, n in other.by_target.items():
            self.by_target[target] = self.by_target.get(target, 0) + n


class LifecycleService:
    def __init__(
        self,
        transitions: TransitionStore,
        rollover: RolloverFinaliser | None = None,
        on_terminated: Callable[[list[uuid.UUID], datetime], None] | None = None,
    ) -> None:
        self.transitions = transitions
        self.rollover = rollover
        #: Told the entitlements a batch recorded TERMINATED, after its commit.
        self.on_terminated = on_terminated

    def advance(
        self,
        now: datetime,
        *,
        batch_size: int = 1000,
        job_run_id: str | None = None,
        dry_run: bool = False,
    ) -> LifecycleReport:
        """Apply what is due, at most ``batch_size`` entitlements (call again for more);
        ``dry_run``: find and compute it all, apply nothing."""
        report = LifecycleReport(job_run_id=job_run_id or uuid.uuid4().hex, dry_run=dry_run)
        batch = self.transitions.advance_due(now, batch_size, report.job_run_id, dry_run=dry_run)
        report.lost_races = batch.lost_races
        report.seen = batch.seen
        report.applied = batch.applied
        for _, chain in batch.applied:
            report.entitlements += 1
            report.transitions += len(chain)
            target = chain[-1].to_status.value
            report.by_target[target] = report.by_target.get(target, 0) + 1
        terminated = [
            due.id for due, chain in batch.applied if chain[-1].to_status is Status.TERMINATED
        ]
        if terminated and not dry_run and self.on_terminated is not None:
            self.on_terminated(terminated, now)
        return report

    def advance_all(
        self,
        now: datetime,
        *,
        batch_size: int = 1000,
        dry_run: bool = False,
        max_batches: int = MAX_BATCHES_PER_RUN,
    ) -> LifecycleReport:
        """Advance batch after batch until nothing is due, at most ``max_batches``
        batches (one job run id for all; ``more_due`` says the next run has work),
        then make the carries that became final so, as many batches at most.
        A dry run looks at one batch of up to ``DRY_RUN_LIMIT`` and finalises nothing."""
        if dry_run:
            return self.advance(now, batch_size=DRY_RUN_LIMIT, dry_run=True)
        total = LifecycleReport(job_run_id=uuid.uuid4().hex)
        total.more_due = True
        for _ in range(max_batches):
            report = self.advance(now, batch_size=batch_size, job_run_id=total.job_run_id)
            total.add(report)
            if report.seen == 0 or report.entitlements + report.lost_races == 0:
                total.more_due = False
                break
        if self.rollover is not None:
            carries, more = self.rollover.finalise_all(
                now, total.job_run_id, batch_size=batch_size, max_batches=max_batches
            )
            total.carries_finalised = carries
            total.more_due = total.more_due or more
        return total
