"""The entitlement status machine, as pure functions of the clock (no I/O).

    PENDING --starts_at--> ACTIVE --ends_at--> GRACE --grace_until--> EXPIRED
                                  \\--ends_at (no grace)------------> EXPIRED

An entitlement that renews (auto-renew, not a trial) does not leave ACTIVE at
``ends_at``: it opens a new period of the same length, and ``ends_at`` moves
to that period's end. A PAY_PER_USE entitlement counts per calendar month
(UTC): while ACTIVE or GRACE, it opens each month's period at ``next_period_at``
(the next month start), as long as the month begins before it stops being
usable. SUSPENDED and TERMINATED are set by an operator and never left by the
clock (TERMINATED is final). A job that missed runs (beat down for a day) catches
up: every transition that fell due is applied in order, each stamped with the
instant it fell due, not the instant the job ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from meterd.domain import ContractMode, Status
from meterd.errors import ConflictError
from meterd.notifications import PERIOD_OPENED_REASON
from meterd.timeutil import next_month_start


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
    trial ends at ends_at unless converted to PRODUCTION). The renewed term repeats
    the length of the latest period."""
    return auto_renew and contract_mode != ContractMode.TRIAL.value


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
    renew_every: timedelta | None = None,
    next_period_at: datetime | None = None,
) -> Transition | None:
    """The earliest transition due at ``now`` from ``status``, if any. ``renew_every``
    is the length of a renewed term, or None if the entitlement does not renew;
    ``next_period_at`` is when a PAY_PER_USE entitlement's next month opens."""
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
    if status is Status.ACTIVE and ends_at is not None and now >= ends_at and renew_every:
        return Transition(status, Status.ACTIVE, ends_at, "renewed", ends_at + renew_every)
    if status is Status.ACTIVE and ends_at is not None and now >= ends_at:
        if grace_until is not None and grace_until > ends_at:
            return Transition(status, Status.GRACE, ends_at, "ends_at reached; grace period")
        return Transition(status, Status.EXPIRED, ends_at, "ends_at reached")
    if status is Status.GRACE and grace_until is not None and now >= grace_until:
        return Transition(status, Status.EXPIRED, grace_until, "grace period over")
    return None


def due_transitions(
    status: Status,
    starts_at: datetime,
    ends_at: datetime | None,
    grace_until: datetime | None,
    now: datetime,
    renew_every: timedelta | None = None,
    next_period_at: datetime | None = None,
) -> list[Transition]:
    """Every transition due at ``now``, in order (several after missed runs)."""
    if renew_every is not None and renew_every <= timedelta(0):
        raise ValueError("a renewed term must have a positive length")
    chain: list[Transition] = []
    while (
        step := next_transition(
            status, starts_at, ends_at, grace_until, now, renew_every, next_period_at
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
    action: OperatorAction, status: Status, starts_at: datetime, now: datetime, reason: str
) -> Transition:
    """The step an operator action takes, effective ``now``.

    Suspend: PENDING, ACTIVE or GRACE -> SUSPENDED (usage is refused). Resume:
    SUSPENDED -> ACTIVE (PENDING before ``starts_at``); whatever the clock did
    meanwhile (an end, a renewal, a month) the lifecycle job then catches up,
    stamped when it fell due. Terminate: anything but TERMINATED -> TERMINATED,
    which is final.
    """
    if action is OperatorAction.SUSPEND:
        if status not in (Status.PENDING, Status.ACTIVE, Status.GRACE):
            raise TransitionRefused(f"cannot suspend an entitlement that is {status.value}")
        return Transition(status, Status.SUSPENDED, now, reason or "suspended by an operator")
    if action is OperatorAction.RESUME:
        if status is not Status.SUSPENDED:
            raise TransitionRefused(f"cannot resume an entitlement that is {status.value}")
        target = Status.ACTIVE if now >= starts_at else Status.PENDING
        return Transition(status, target, now, reason or "resumed by an operator")
    if status is Status.TERMINATED:
        raise TransitionRefused("the entitlement is already terminated (final)")
    return Transition(status, Status.TERMINATED, now, reason or "terminated by an operator")
