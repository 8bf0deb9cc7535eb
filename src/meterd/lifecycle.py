"""The entitlement status machine, as pure functions of the clock (no I/O).

    PENDING --starts_at--> ACTIVE --ends_at--> GRACE --grace_until--> EXPIRED
                                  \\--ends_at (no grace)------------> EXPIRED

An entitlement that renews (auto-renew, not a trial) does not leave ACTIVE at
``ends_at``: it opens a new period of the same length, and ``ends_at`` moves
to that period's end. SUSPENDED and TERMINATED are set by an operator and
never left by the clock (TERMINATED is final). A job that missed runs (beat down for a day) catches
up: every transition that fell due is applied in order, each stamped with the
instant it fell due, not the instant the job ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from meterd.domain import Status


@dataclass(frozen=True, slots=True)
class Transition:
    from_status: Status
    to_status: Status
    at: datetime
    reason: str
    #: Set on a renewal: the new period runs from ``at`` to here.
    renewal_end: datetime | None = None


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
) -> Transition | None:
    """The one transition due at ``now`` from ``status``, if any. ``renew_every`` is
    the length of a renewed term, or None if the entitlement does not renew."""
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
) -> list[Transition]:
    """Every transition due at ``now``, in order (several after missed runs)."""
    if renew_every is not None and renew_every <= timedelta(0):
        raise ValueError("a renewed term must have a positive length")
    chain: list[Transition] = []
    while (
        step := next_transition(status, starts_at, ends_at, grace_until, now, renew_every)
    ) is not None:
        chain.append(step)
        status = step.to_status
        if step.renewal_end is not None:
            ends_at, grace_until = extend_term(ends_at, grace_until, step.renewal_end)
    return chain
