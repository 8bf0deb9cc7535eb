"""The entitlement status machine, as pure functions of the clock (no I/O).

    PENDING --starts_at--> ACTIVE --ends_at--> GRACE --grace_until--> EXPIRED
                                  \\--ends_at (no grace)------------> EXPIRED

SUSPENDED and TERMINATED are set by an operator and never left by the clock
(TERMINATED is final). A job that missed runs (beat down for a day) catches
up: every transition that fell due is applied in order, each stamped with the
instant it fell due, not the instant the job ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from meterd.domain import Status


@dataclass(frozen=True, slots=True)
class Transition:
    from_status: Status
    to_status: Status
    at: datetime
    reason: str


def next_transition(
    status: Status,
    starts_at: datetime,
    ends_at: datetime | None,
    grace_until: datetime | None,
    now: datetime,
) -> Transition | None:
    """The one transition due at ``now`` from ``status``, if any."""
    if status is Status.PENDING and now >= starts_at:
        return Transition(status, Status.ACTIVE, starts_at, "starts_at reached")
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
) -> list[Transition]:
    """Every transition due at ``now``, in order (several after missed runs)."""
    chain: list[Transition] = []
    while (step := next_transition(status, starts_at, ends_at, grace_until, now)) is not None:
        chain.append(step)
        status = step.to_status
    return chain
