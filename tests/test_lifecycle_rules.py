"""The status machine: each transition, exactly at its boundary and one microsecond before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meterd.core.domain import Renewal, Status
from meterd.core.lifecycle import Transition, due_transitions, next_period_after, next_transition
from meterd.core.terms import Term

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)
GRACE = END + timedelta(days=3)
US = timedelta(microseconds=1)


def statuses(status: Status, now: datetime, grace: datetime | None = None) -> list[Status]:
    return [t.to_status for t in due_transitions(status, START, END, grace, now)]


def test_pending_becomes_active_exactly_at_starts_at() -> None:
    assert statuses(Status.PENDING, START - US) == []
    assert statuses(Status.PENDING, START) == [Status.ACTIVE]


def test_active_expires_exactly_at_ends_at_without_grace() -> None:
    assert statuses(Status.ACTIVE, END - US) == []
    assert statuses(Status.ACTIVE, END) == [Status.EXPIRED]


def test_active_enters_grace_at_ends_at_when_grace_applies() -> None:
    assert statuses(Status.ACTIVE, END, GRACE) == [Status.GRACE]


def test_grace_expires_exactly_at_grace_until() -> None:
    assert statuses(Status.GRACE, GRACE - US, GRACE) == []
    assert statuses(Status.GRACE, GRACE, GRACE) == [Status.EXPIRED]


def test_open_ended_entitlement_never_expires() -> None:
    assert due_transitions(Status.ACTIVE, START, None, None, START + timedelta(days=10**4)) == []


@pytest.mark.parametrize("status", [Status.SUSPENDED, Status.TERMINATED, Status.EXPIRED])
def test_operator_and_final_states_are_never_left_by_the_clock(status: Status) -> None:
    assert statuses(status, GRACE + timedelta(days=365), GRACE) == []


def test_missed_runs_catch_up_in_order_stamped_when_each_fell_due() -> None:
    chain = due_transitions(Status.PENDING, START, END, GRACE, GRACE + timedelta(days=1))
    assert [(t.from_status, t.to_status, t.at) for t in chain] == [
        (Status.PENDING, Status.ACTIVE, START),
        (Status.ACTIVE, Status.GRACE, END),
        (Status.GRACE, Status.EXPIRED, GRACE),
    ]


def test_next_transition_gives_one_step() -> None:
    step = next_transition(Status.PENDING, START, END, None, END)
    assert step is not None and step.to_status is Status.ACTIVE


MONTH = timedelta(days=30)


def test_renewing_entitlement_stays_active_and_opens_the_next_term_at_ends_at() -> None:
    renewal = Renewal(anchor=END - MONTH, term=Term(length=MONTH), quantity=None)
    assert due_transitions(Status.ACTIVE, START, END, None, END - US, renewal) == []
    (step,) = due_transitions(Status.ACTIVE, START, END, None, END, renewal)
    assert (step.to_status, step.at, step.renewal_end) == (Status.ACTIVE, END, END + MONTH)


def test_missed_renewals_catch_up_one_term_at_a_time() -> None:
    renewal = Renewal(anchor=END - MONTH, term=Term(length=MONTH), quantity=None)
    chain = due_transitions(Status.ACTIVE, START, END, None, END + 2 * MONTH, renewal)
    assert [(t.at, t.renewal_end) for t in chain] == [
        (END, END + MONTH),
        (END + MONTH, END + 2 * MONTH),
        (END + 2 * MONTH, END + 3 * MONTH),
    ]


@pytest.mark.parametrize(
    ("status", "billing", "quantity", "consumed", "expected"),
    [
        ("ACTIVE", "PRE_PAID", "10", "9.999999", "ACTIVE"),
        ("ACTIVE", "PRE_PAID", "10", "10", "EXHAUSTED"),
        ("GRACE", "PRE_PAID", "10", "12", "EXHAUSTED"),
        ("ACTIVE", "PAY_PER_USE", "10", "12", "ACTIVE"),
        ("ACTIVE", "PRE_PAID", None, "10000", "ACTIVE"),
        ("SUSPENDED", "PRE_PAID", "10", "10", "SUSPENDED"),
        ("EXPIRED", "PRE_PAID", "10", "10", "EXPIRED"),
    ],
)
def test_effective_state_marks_a_used_up_pre_paid_grant_exhausted(
    status: str, billing: str, quantity: str | None, consumed: str, expected: str
) -> None:
    from decimal import Decimal

    from meterd.core.domain import BillingType, effective_state

    state = effective_state(
        Status(status),
        BillingType(billing),
        Decimal(quantity) if quantity is not None else None,
        Decimal(consumed),
    )
    assert state.value == expected


def test_a_moved_term_keeps_its_grace_length() -> None:
    from meterd.core.lifecycle import extend_term

    assert extend_term(END, GRACE, END + MONTH) == (END + MONTH, GRACE + MONTH)
    assert extend_term(END, None, END + MONTH) == (END + MONTH, None)
    assert extend_term(END, GRACE, None) == (None, None)
    assert extend_term(None, None, END) == (None, None)


# -- PAY_PER_USE calendar months ---------------------------------------------------------

DEC = datetime(2026, 12, 1, tzinfo=UTC)
JAN = datetime(2027, 1, 1, tzinfo=UTC)
FEB = datetime(2027, 2, 1, tzinfo=UTC)


def months(chain: list[Transition]) -> list[tuple[datetime, datetime | None]]:
    return [(t.at, t.month_end) for t in chain if t.month_end is not None]


def test_a_month_opens_exactly_at_its_first_instant() -> None:
    assert due_transitions(Status.ACTIVE, START, None, None, DEC - US, next_period_at=DEC) == []
    chain = due_transitions(Status.ACTIVE, START, None, None, DEC, next_period_at=DEC)
    assert [(t.from_status, t.to_status, t.at, t.month_end) for t in chain] == [
        (Status.ACTIVE, Status.ACTIVE, DEC, JAN)
    ]


def test_missed_months_open_one_by_one() -> None:
    chain = due_transitions(Status.ACTIVE, START, None, None, FEB, next_period_at=DEC)
    assert months(chain) == [(DEC, JAN), (JAN, FEB), (FEB, datetime(2027, 3, 1, tzinfo=UTC))]


def test_no_month_opens_once_the_entitlement_has_ended() -> None:
    chain = due_transitions(Status.ACTIVE, START, DEC, None, FEB, next_period_at=DEC)
    assert [(t.to_status, t.at) for t in chain] == [(Status.EXPIRED, DEC)]
    assert next_period_after(chain, DEC) is None


def test_a_month_opens_during_grace_and_the_chain_stays_in_time_order() -> None:
    ends = DEC - timedelta(days=2)
    chain = due_transitions(Status.ACTIVE, START, ends, JAN + timedelta(days=3), FEB, None, DEC)
    assert [(t.from_status, t.to_status, t.at) for t in chain] == [
        (Status.ACTIVE, Status.GRACE, ends),
        (Status.GRACE, Status.GRACE, DEC),
        (Status.GRACE, Status.GRACE, JAN),
        (Status.GRACE, Status.EXPIRED, JAN + timedelta(days=3)),
    ]


def test_a_pending_entitlement_opens_months_only_after_it_starts() -> None:
    chain = due_transitions(Status.PENDING, DEC, None, None, JAN, next_period_at=JAN)
    assert [(t.to_status, t.at) for t in chain] == [(Status.ACTIVE, DEC), (Status.ACTIVE, JAN)]
    assert next_period_after(chain, JAN) == FEB
