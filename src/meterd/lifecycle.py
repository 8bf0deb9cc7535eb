"""The entitlement status machine, as pure functions of the clock (no I/O).

    PENDING --starts_at--> ACTIVE --ends_at--> GRACE --grace_until--> EXPIRED
                                  \\--ends_at (no grace)------------> EXPIRED

**The state at an instant** is ``status_at(view, t)`` and the period usage at
``t`` lands in is ``period_at(view, t)``: functions of the entitlement's
dates, its term, its grace, its renewal and the operator's suspensions and
termination, never of whether the lifecycle job has run. The value read,
reserve, ingest (``ingest.lua`` mirrors them), the lists and the seed routes
all use them; the job only records the transitions (the audit trail) and
opens the period rows.

An entitlement that renews (auto-renew, not a trial) does not leave ACTIVE at
``ends_at``: it opens the next term on the calendar (``meterd.terms``: term
``k`` starts at ``anchor + k * term``), and ``ends_at`` moves to that term's
end. A PAY_PER_USE entitlement counts per calendar month
(UTC): while ACTIVE or GRACE, it opens each month's period at ``next_period_at``
(the next month start), as long as the month begins before it stops being
usable. SUSPENDED and TERMINATED are set by an operator and never left by the
clock (TERMINATED is final). A job that missed runs (beat down for a day) catches
up: every transition that fell due is applied in order, each stamped with the
instant it fell due, not the instant the job ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from meterd.domain import BillingType, ContractMode, EntitlementView, Period, Renewal, Status
from meterd.errors import ConflictError
from meterd.notifications import PERIOD_OPENED_REASON
from meterd.timeutil import month_start, next_month_start

RENEWED_REASON = "renewed"
EXTENDED_REASON = "term extended"


@dataclass(frozen=True, slots=True)
class Transition:
    from_status: Status
    to_status: Status
    at: datetime
    reason: str
    #: Set on a renewal: the new period runs from ``at`` to here.
    renewal_end: datetime | None = None
    #: Set when a PAY_PER_USE month opens: its period runs from ``at`` to here.
    month_end: datetime | None = None


def renews(auto_renew: bool, contract_mode: str) -> bool:
    """Whether an entitlement renews at ``ends_at``: auto-renew and not a trial (a
    trial ends at ends_at unless converted to PRODUCTION)."""
    return auto_renew and contract_mode != ContractMode.TRIAL.value


def status_at(view: EntitlementView, moment: datetime) -> Status:
    """The status of an entitlement at ``moment``, from the clock and the operator's
    history alone."""
    if view.terminated_at is not None and moment >= view.terminated_at:
        return Status.TERMINATED
    if any(start <= moment and (end is None or moment < end) for start, end in view.suspensions):
        return Status.SUSPENDED
    if moment < view.starts_at:
        return Status.PENDING
    if view.renewal is not None or view.ends_at is None or moment < view.ends_at:
        return Status.ACTIVE
    if view.grace_until is not None and moment < view.grace_until:
        return Status.GRACE
    return Status.EXPIRED


def usable_at(view: EntitlementView, moment: datetime) -> bool:
    """Whether usage timed at ``moment`` counts on the entitlement."""
    return status_at(view, moment) in (Status.ACTIVE, Status.GRACE)


def period_at(view: EntitlementView, moment: datetime) -> Period | None:
    """The usage period containing ``moment`` (None: before the first one).

    PAY_PER_USE: the UTC calendar month. PRE_PAID: the stored period containing
    it; past the last one, a renewing entitlement's term on the calendar (it
    starts where the stored ones end, if later than the calendar boundary: old
    periods that drifted join the calendar again), else the last period (grace).
    """
    if view.billing_type is BillingType.PAY_PER_USE:
        return Period(month_start(moment), next_month_start(moment), view.quantity)
    before = [p for p in view.periods if p.start <= moment]
    latest = max(before, key=lambda p: p.start) if before else None
    if latest is not None and (latest.end is None or moment < latest.end):
        return latest
    renewal = view.renewal
    if renewal is not None and moment >= view.starts_at:
        k = renewal.term.index_at(renewal.anchor, moment)
        start = renewal.term.start(renewal.anchor, k)
        if latest is not None and latest.end is not None and latest.end > start:
            start = latest.end
        return Period(start, renewal.term.start(renewal.anchor, k + 1), renewal.quantity)
    return latest


def renewal_end(renewal: Renewal, ends_at: datetime) -> datetime:
    """Where the term renewed at ``ends_at`` ends: the next boundary on the calendar."""
    return renewal.term.end_after(renewal.anchor, ends_at)


def extend_term(
    ends_at: datetime | None, grace_until: datetime | None, new_end: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """(ends_at, grace_until) of a term moved to end at ``new_end`` (None: open-ended);
    a grace period keeps its length. An open-ended term has nothing to move."""
    if ends_at is None:
        return ends_at, grace_until
    grace = grace_until - ends_at if grace_until is not None else None
    if new_end is None or grace is None:
        return new_end, None
    return new_end, new_end + grace


def next_transition(
    status: Status,
    starts_at: datetime,
    ends_at: datetime | None,
    grace_until: datetime | None,
    now: datetime,
    renewal: Renewal | None = None,
    next_period_at: datetime | None = None,
) -> Transition | None:
    """The earliest transition due at ``now`` from ``status``, if any. ``renewal``:
    how the entitlement renews, None if it does not; ``next_period_at`` is when a
    PAY_PER_USE entitlement's next month opens. A stored EXPIRED or GRACE whose
    term was extended since (or that renews) is reopened."""
    reopened = _reopened(status, ends_at, grace_until, now, renewal)
    if reopened is not None:
        return reopened
    if (
        status in (Status.ACTIVE, Status.GRACE)
        and next_period_at is not None
        and now >= next_period_at
    ):
        own_step = ends_at if status is Status.ACTIVE else grace_until
        if own_step is None or next_period_at < own_step:
            return Transition(
                status,
                status,
                next_period_at,
                PERIOD_OPENED_REASON,
                month_end=next_month_start(next_period_at),
            )
    if status is Status.PENDING and now >= starts_at:
        return Transition(status, Status.ACTIVE, starts_at, "starts_at reached")
    if status is Status.ACTIVE and ends_at is not None and now >= ends_at and renewal:
        return Transition(
            status, Status.ACTIVE, ends_at, RENEWED_REASON, renewal_end(renewal, ends_at)
        )
    if status is Status.ACTIVE and ends_at is not None and now >= ends_at:
        if grace_until is not None and grace_until > ends_at:
            return Transition(status, Status.GRACE, ends_at, "ends_at reached; grace period")
        return Transition(status, Status.EXPIRED, ends_at, "ends_at reached")
    if status is Status.GRACE and grace_until is not None and now >= grace_until:
        return Transition(status, Status.EXPIRED, grace_until, "grace period over")
    return None


def _reopened(
    status: Status,
    ends_at: datetime | None,
    grace_until: datetime | None,
    now: datetime,
    renewal: Renewal | None,
) -> Transition | None:
    """The step back to usable of an entitlement recorded EXPIRED or GRACE whose
    clock says otherwise: its end was moved later (stamped now, when it was moved),
    or it renews (stamped at its end: it should have renewed there)."""
    if status not in (Status.EXPIRED, Status.GRACE):
        return None
    if renewal is not None and ends_at is not None:
        return Transition(
            status, Status.ACTIVE, ends_at, RENEWED_REASON, renewal_end(renewal, ends_at)
        )
    if ends_at is None or now < ends_at:
        return Transition(status, Status.ACTIVE, now, EXTENDED_REASON)
    if status is Status.EXPIRED and grace_until is not None and now < grace_until:
        return Transition(status, Status.GRACE, now, EXTENDED_REASON)
    return None


def due_transitions(
    status: Status,
    starts_at: datetime,
    ends_at: datetime | None,
    grace_until: datetime | None,
    now: datetime,
    renewal: Renewal | None = None,
    next_period_at: datetime | None = None,
) -> list[Transition]:
    """Every transition due at ``now``, in order (several after missed runs)."""
    chain: list[Transition] = []
    while (
        step := next_transition(
            status, starts_at, ends_at, grace_until, now, renewal, next_period_at
        )
    ) is not None:
        chain.append(step)
        status = step.to_status
        if step.renewal_end is not None:
            ends_at, grace_until = extend_term(ends_at, grace_until, step.renewal_end)
        if step.month_end is not None:
            next_period_at = step.month_end
    return chain


def next_period_after(chain: list[Transition], current: datetime | None) -> datetime | None:
    """``next_period_at`` once the chain is applied: None when the entitlement can no
    longer be used (so it leaves the index of due months), else past the last month
    the chain opened."""
    if chain and chain[-1].to_status not in (Status.ACTIVE, Status.GRACE, Status.PENDING):
        return None
    months = [step.month_end for step in chain if step.month_end is not None]
    return months[-1] if months else current


class OperatorAction(StrEnum):
    SUSPEND = "suspend"
    RESUME = "resume"
    TERMINATE = "terminate"


class TransitionRefused(ConflictError):
    """An operator action that the entitlement's status does not allow."""


def operator_transition(
    action: OperatorAction,
    status: Status,
    starts_at: datetime,
    now: datetime,
    reason: str,
    suspended_from: Status | None = None,
) -> Transition:
    """The step an operator action takes, effective ``now``.

    Suspend: PENDING, ACTIVE or GRACE -> SUSPENDED (usage is refused). Resume:
    SUSPENDED -> the status it was suspended from: GRACE stays GRACE (its term
    had ended, and that step is already in the audit trail), otherwise ACTIVE
    (PENDING before ``starts_at``); whatever the clock did meanwhile (an end, a
    renewal, a month) is then caught up, stamped when it fell due. Terminate:
    anything but TERMINATED -> TERMINATED, which is final.
    """
    if action is OperatorAction.SUSPEND:
        if status not in (Status.PENDING, Status.ACTIVE, Status.GRACE):
            raise TransitionRefused(f"cannot suspend an entitlement that is {status.value}")
        return Transition(status, Status.SUSPENDED, now, reason or "suspended by an operator")
    if action is OperatorAction.RESUME:
        if status is not Status.SUSPENDED:
            raise TransitionRefused(f"cannot resume an entitlement that is {status.value}")
        if suspended_from is Status.GRACE:
            target = Status.GRACE
        else:
            target = Status.ACTIVE if now >= starts_at else Status.PENDING
        return Transition(status, target, now, reason or "resumed by an operator")
    if status is Status.TERMINATED:
        raise TransitionRefused("the entitlement is already terminated (final)")
    return Transition(status, Status.TERMINATED, now, reason or "terminated by an operator")
