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
``ends_at``: it opens the next term on the calendar (``meterd.core.terms``: term
``k`` starts at ``anchor + k * term``), and ``ends_at`` moves to that term's
end. A PAY_PER_USE entitlement counts per calendar month
(UTC): while ACTIVE or GRACE, it opens each month's period at ``next_period_at``
(the next month start), as long as the month begins before it stops being
usable. SUSPENDED and TERMINATED are set by an operator and never left by the
clock (TERMINATED is final). A job that missed runs (beat down for a day) catches
up: every transition that fell due is applied in order, each stamped with the
instant it fell due, not the instant the job ran.

**A catch-up is bounded** (``due_transitions``): however far back the missed
terms go (a grant backdated to year 1 with a 1-day term has 740,000 of them),
one call records at most ``MAX_CAUGHT_UP_TERMS`` renewals (or PAY_PER_USE
months) one by one, the most recent ones; the terms before them, and every term
that ended before the late window (no event can be counted in it any more), are
one *summary* step (``Transition.summarised``): one audit row that says how many
terms it stands for and from when to when, and no period row. A late event in a
summarised term still lands in that term (``period_at`` reads the calendar past
the stored periods), and ingest opens its period row. The work is a constant
number of calendar computations (``Term.index_at``), not one per term.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from meterd.core.domain import BillingType, ContractMode, EntitlementView, Period, Renewal, Status
from meterd.core.errors import ConflictError
from meterd.core.notifications import PERIOD_OPENED_REASON
from meterd.core.quantity import to_units
from meterd.core.rollover import UNLIMITED, term_limit
from meterd.core.terms import add_months
from meterd.core.timeutil import isoformat, month_start, next_month_start

RENEWED_REASON = "renewed"
EXTENDED_REASON = "term extended"

#: One call (a request's settling, or the lifecycle job for one entitlement) records
#: at most this many renewals or PAY_PER_USE months one by one, each with its audit
#: row and period; older ones are one summary step. 50 covers the default late
#: window (35 days) of a 1-DAY term: every term an event can still land in.
MAX_CAUGHT_UP_TERMS = 50

#: The shortest term an entitlement renews by: a term of a microsecond would renew
#: a million times a second (one period row and audit row each).
MIN_RENEWING_TERM = timedelta(hours=1)


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
    #: A summary step of a catch-up: it stands for this many renewals (or months) in a
    #: row, the first due at ``at``, the last ending at ``renewal_end`` (``month_end``),
    #: recorded as one audit row with no period of their own. 0: an ordinary step.
    summarised: int = 0

    @property
    def opens_term(self) -> bool:
        """A renewal or a PAY_PER_USE month (the status stays), or a summary of them."""
        return self.renewal_end is not None or self.month_end is not None

    @property
    def opens_period(self) -> bool:
        """Whether recording the step opens a usage period: it opens one term, not a
        summary of several."""
        return self.opens_term and not self.summarised


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


_ONE_US = timedelta(microseconds=1)


def renews_at(view: EntitlementView, start: datetime) -> bool:
    """Whether a period starting at ``start`` is a renewed term: a boundary of the
    calendar after the entitlement's start (the first term, a reset's fresh period
    and a period that starts off the calendar carry nothing)."""
    renewal = view.renewal
    if renewal is None or start <= view.starts_at:
        return False
    return renewal.term.start(renewal.anchor, renewal.term.index_at(renewal.anchor, start)) == start


def limit_units(view: EntitlementView, period: Period, consumed_of: Callable[[Period], int]) -> int:
    """The effective limit of ``period`` (from ``period_at``) in units of the view's
    scale, -1 unlimited: its quantity, plus for a renewed term of an entitlement
    that rolls over what the term before carried (``meterd.core.rollover``), as a
    function of the consumptions (``consumed_of``: a period's consumed units, the
    counters' used value; held units are not consumed). A stored final carry
    (``Period.rolled_over``) ends the walk back; so do the first term and periods off
    the calendar. The caller must give periods back to a final one (the resolution
    data does: ``storage/resolution_views.py``). ``lua/ingest/rollover.lua``'s
    ``rolled_limit`` is the twin."""
    renewal = view.renewal
    chain: list[Period] = []  # renewed terms whose carry is computed, latest first
    current: Period | None = period
    base_limit = UNLIMITED
    while current is not None:
        if current.quantity is None:
            base_limit = UNLIMITED
            break
        units = to_units(current.quantity, view.scale)
        if renewal is None or not renewal.rolls_over:
            base_limit = units
            break
        if current.rolled_over is not None:
            base_limit = units + to_units(current.rolled_over, view.scale)
            break
        if not renews_at(view, current.start):
            base_limit = units
            break
        before = period_at(view, current.start - _ONE_US)
        if before is None:
            base_limit = units
            break
        chain.append(current)
        current = before
    if renewal is None or not chain:
        return base_limit
    rmax = to_units(renewal.rollover_max, view.scale)
    rmin = to_units(renewal.rollover_min, view.scale)
    # fold forward from the term whose limit is final
    limit = base_limit
    for later, earlier in zip(reversed(chain), [current, *reversed(chain[1:])], strict=True):
        assert earlier is not None and later.quantity is not None
        base = to_units(later.quantity, view.scale)
        limit = term_limit(base, limit, consumed_of(earlier), rmax, rmin)
    return limit


def limit_reads(view: EntitlementView, period: Period) -> list[Period]:
    """The periods whose consumption ``limit_units`` reads for ``period`` (none when
    nothing carries): a reader fetches their totals first, in one round trip."""
    read: list[Period] = []

    def record(p: Period) -> int:
        read.append(p)
        return 0

    limit_units(view, period, record)  # which periods it reads never depends on the totals
    return read


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
    *,
    history_before: datetime | None = None,
    max_terms: int = MAX_CAUGHT_UP_TERMS,
    terminated_at: datetime | None = None,
) -> list[Transition]:
    """Every transition due at ``now``, in order (several after missed runs).

    ``terminated_at``: a void from that instant (``POST .../void``, possibly
    scheduled ahead): the steps due before it, then TERMINATED at it, once it has
    come; nothing of the term after it (no renewal at or past the void).

    Renewals and PAY_PER_USE months that fell due in a row are listed one by one
    only for the ``max_terms`` most recent ones whose term ends after
    ``history_before`` (the start of the late window: None, no such limit); the
    ones before are one summary step. So the chain has at most ``max_terms + 1``
    renewals, or twice that of months (while ACTIVE, then in GRACE), and a few
    status steps, whatever the dates; computing it costs as much."""
    chain: list[Transition] = []
    voided = terminated_at is not None and now >= terminated_at
    if terminated_at is not None and voided:
        now = terminated_at - timedelta(microseconds=1)  # what fell due before the void
    while (
        step := next_transition(
            status, starts_at, ends_at, grace_until, now, renewal, next_period_at
        )
    ) is not None:
        if step.renewal_end is not None and renewal is not None:
            step = _summarised_renewals(step, renewal, now, history_before, max_terms)
        elif step.month_end is not None:
            own_end = ends_at if status is Status.ACTIVE else grace_until
            step = _summarised_months(step, own_end, now, history_before, max_terms)
        chain.append(step)
        status = step.to_status
        if step.renewal_end is not None:
            ends_at, grace_until = extend_term(ends_at, grace_until, step.renewal_end)
        if step.month_end is not None:
            next_period_at = step.month_end
    if voided and status is not Status.TERMINATED:
        assert terminated_at is not None
        chain.append(Transition(status, Status.TERMINATED, terminated_at, VOIDED_REASON))
    return chain


def _to_summarise(due: int, history: int, max_terms: int) -> int:
    """How many of ``due`` steps in a row to summarise: the ``history`` ones whose
    terms ended before the late window, and all but the ``max_terms`` latest."""
    return max(min(history, due), due - max(max_terms, 1), 0)


def _summarised_renewals(
    step: Transition,
    renewal: Renewal,
    now: datetime,
    history_before: datetime | None,
    max_terms: int,
) -> Transition:
    """``step`` (the first of the renewals due in a row), or a summary of it and the
    ones after it that are not to be listed one by one.

    The renewals due: ``step`` (at the recorded end, to boundary ``j0``), then one at
    each boundary ``j0 .. k_now`` (the term containing ``now``); the i-th of them
    opens the term ending at boundary ``j0 + i``."""
    term, anchor = renewal.term, renewal.anchor
    j0 = term.index_at(anchor, step.at) + 1
    due = 1 + max(term.index_at(anchor, now) - j0 + 1, 0)
    history = 0
    if history_before is not None:
        history = max(term.index_at(anchor, history_before) - j0 + 1, 0)
    skipped = _to_summarise(due, history, max_terms)
    if not skipped:
        return step
    last_end = term.start(anchor, j0 + skipped - 1)
    return Transition(
        step.from_status,
        step.to_status,
        step.at,
        f"{RENEWED_REASON} {skipped:,} times from {isoformat(step.at)} to"
        f" {isoformat(last_end)} {_in_one_step(max_terms)}",
        renewal_end=last_end,
        summarised=skipped,
    )


def _summarised_months(
    step: Transition,
    own_end: datetime | None,
    now: datetime,
    history_before: datetime | None,
    max_terms: int,
) -> Transition:
    """``step`` (the first of the PAY_PER_USE months due in a row), or a summary of it
    and the ones after it that are not to be listed one by one. Months open while
    the status lasts: each month starting at or before ``now`` and before
    ``own_end``."""
    first = step.at
    last_due = now if own_end is None else min(now, own_end - _US)
    due = _months_between(first, month_start(last_due)) + 1
    history = 0
    if history_before is not None:
        history = max(_months_between(first, month_start(history_before)), 0)
    skipped = _to_summarise(due, history, max_terms)
    if not skipped:
        return step
    last_end = add_months(first, skipped)
    return replace(
        step,
        reason=f"{PERIOD_OPENED_REASON}: {skipped:,} months from {isoformat(first)} to"
        f" {isoformat(last_end)} {_in_one_step(max_terms)}",
        month_end=last_end,
        summarised=skipped,
    )


_US = timedelta(microseconds=1)


def _in_one_step(max_terms: int) -> str:
    return (
        "in one step (terms that ended before the late window, or before the"
        f" {max_terms} latest, get no period row of their own)"
    )


def _months_between(first: datetime, later: datetime) -> int:
    """Whole calendar months from month start ``first`` to month start ``later``."""
    return (later.year - first.year) * 12 + later.month - first.month


def next_period_after(chain: list[Transition], current: datetime | None) -> datetime | None:
    """``next_period_at`` once the chain is applied: None when the entitlement can no
    longer be used (so it leaves the index of due months), else past the last month
    the chain opened."""
    if chain and chain[-1].to_status not in (Status.ACTIVE, Status.GRACE, Status.PENDING):
        return None
    months = [step.month_end for step in chain if step.month_end is not None]
    return months[-1] if months else current


#: The reason of the step a void takes its entitlement to TERMINATED with.
VOIDED_REASON = "voided"


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
