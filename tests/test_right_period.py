"""Right period, right state, right entitlement (issue 11): each numbered bug as a test.

State and period are functions of the event's time and the calendar, never of
whether the lifecycle job has run: every test here either never runs the job,
or checks that running it changes nothing a reader sees.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from meterd.core.domain import Outcome, Status
from meterd.core.errors import ConflictError
from meterd.core.lifecycle import OperatorAction
from meterd.core.terms import TermUnit
from meterd.runtime import Runtime
from meterd.services.catalog import EntitlementChange, NewPlan
from meterd.services.reserve import Reservation, ReserveOutcome
from meterd.storage.models import Entitlement
from meterd.testing import event

from .conftest import NOW
from .helpers import grant


def d(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def period_bounds(rt: Runtime, ent: Entitlement) -> list[tuple[datetime, datetime | None]]:
    return [(p.period_start, p.period_end) for p in rt.usage.periods_of(ent.id)]


def current(rt: Runtime, now: datetime, customer: str = "cust-1") -> list:  # type: ignore[type-arg]
    return rt.balance.current("acme", customer, "api_calls", now)


def renewing(rt: Runtime, **extra: object) -> Entitlement:
    """10 units a month from 2027-01-01, auto-renewing (created 2026-11-22: PENDING)."""
    return grant(
        rt, quantity="10", starts_at=d(2027, 1, 1), ends_at=d(2027, 2, 1), auto_renew=True,
        **extra,
    )  # fmt: skip


def monthly_plan(rt: Runtime, now: datetime) -> object:
    return rt.catalog.create_plan(
        NewPlan(
            org="acme", key="monthly", feature="api_calls", quantity=Decimal(100),
            term_value=1, term_unit=TermUnit.MONTH, auto_renew=True,
        ),
        now,
    )  # fmt: skip


def job_runs(rt: Runtime, instants: list[datetime]) -> None:
    """The lifecycle job run at each instant, as beat runs it (a job that missed terms
    older than the late window summarises them: tests/test_bounded_catch_up.py)."""
    for instant in instants:
        rt.lifecycle.advance_all(instant)


# -- 1. renewals drift -----------------------------------------------------------------------


def test_a_monthly_plan_from_jan_31_renews_on_each_month_end(runtime: Runtime) -> None:
    start = d(2027, 1, 31)
    plan = monthly_plan(runtime, start)
    ent = runtime.catalog.entitlement_from_plan("acme", plan.id, "cust-1", start, start)  # type: ignore[attr-defined]
    job_runs(runtime, [d(2027, month, 1) for month in (3, 4, 5, 6)])
    assert period_bounds(runtime, ent) == [
        (d(2027, 1, 31), d(2027, 2, 28)),
        (d(2027, 2, 28), d(2027, 3, 31)),
        (d(2027, 3, 31), d(2027, 4, 30)),
        (d(2027, 4, 30), d(2027, 5, 31)),
        (d(2027, 5, 31), d(2027, 6, 30)),
    ]


def test_an_entitlement_of_one_calendar_month_renews_on_the_first(runtime: Runtime) -> None:
    ent = grant(runtime, starts_at=d(2027, 1, 1), ends_at=d(2027, 2, 1), auto_renew=True)
    job_runs(runtime, [d(2027, month, 2) for month in (2, 3, 4, 5)])
    starts = [start for start, _ in period_bounds(runtime, ent)]
    assert starts == [d(2027, 1, 1), d(2027, 2, 1), d(2027, 3, 1), d(2027, 4, 1), d(2027, 5, 1)]


def test_a_yearly_term_does_not_drift_across_a_leap_year(runtime: Runtime) -> None:
    ent = grant(runtime, starts_at=d(2027, 3, 1), ends_at=d(2028, 3, 1), auto_renew=True)
    job_runs(runtime, [d(year, 3, 2) for year in (2028, 2029, 2030)])
    ends = [end for _, end in period_bounds(runtime, ent)]
    assert ends == [d(2028, 3, 1), d(2029, 3, 1), d(2030, 3, 1), d(2031, 3, 1)]


# -- 2. auto-renewing entitlements never lapse ------------------------------------------------


def test_an_auto_renewing_entitlement_is_active_past_ends_at_before_the_job_runs(
    runtime: Runtime,
) -> None:
    ent = renewing(runtime)
    after = d(2027, 2, 1) + timedelta(hours=1)
    (balance,) = current(runtime, after)
    assert (balance.status, balance.usable, balance.period_start) == (
        Status.ACTIVE, True, d(2027, 2, 1),
    )  # fmt: skip
    assert balance.ends_at == d(2027, 3, 1)
    # The job never ran: the recorded status lags, what every reader sees does not.
    assert runtime.entitlements.get(ent.id).status == Status.PENDING


def test_usage_after_ends_at_counts_in_the_new_term_before_the_job_runs(
    runtime: Runtime,
) -> None:
    ent = renewing(runtime, grace=timedelta(days=5))
    after = d(2027, 2, 2)
    report = runtime.ingest.ingest([event(time=after, quantity="3")], now=after)
    assert report.outcomes == [Outcome.ACCEPTED]
    runtime.flush.flush_all(after)
    consumed = {p.period_start: p.consumed for p in runtime.usage.periods_of(ent.id)}
    assert consumed == {d(2027, 1, 1): Decimal(0), d(2027, 2, 1): Decimal(3)}
    assert period_bounds(runtime, ent)[-1] == (d(2027, 2, 1), d(2027, 3, 1))


def test_reserve_is_granted_past_ends_at_of_an_auto_renewing_entitlement(
    runtime: Runtime,
) -> None:
    renewing(runtime)
    after = d(2027, 2, 1) + timedelta(minutes=1)
    asked = Reservation("acme", "cust-1", "api_calls", Decimal(10), "k-1")
    assert runtime.reserve.reserve(asked, after) is ReserveOutcome.GRANTED


def test_running_the_job_changes_nothing_a_reader_sees(runtime: Runtime) -> None:
    renewing(runtime)
    after = d(2027, 3, 15)
    runtime.ingest.ingest([event(time=after, quantity="2")], now=after)
    before = current(runtime, after)
    runtime.lifecycle.advance_all(after)
    runtime.resolution.refresh([("acme", "cust-1", "api_calls")], after)
    assert current(runtime, after) == before
    assert runtime.balance.balances("acme", "cust-1", "api_calls", after)[0].consumed == 2


# -- 3. the stored status agrees with the clock -----------------------------------------------


def test_a_backdated_entitlement_in_grace_is_created_in_grace_with_its_audit(
    runtime: Runtime,
) -> None:
    now = d(2026, 11, 23)
    ent = runtime.catalog.create_entitlement(
        _spec(starts_at=d(2026, 11, 1), ends_at=d(2026, 11, 20), grace=timedelta(days=10)), now
    )
    assert ent.status == Status.GRACE
    steps = [(t.from_status, t.to_status, t.at) for t in runtime.transitions.history(ent.id)]
    assert steps == [("ACTIVE", "GRACE", d(2026, 11, 20))]


def test_a_backdated_auto_renewing_entitlement_is_created_renewed(runtime: Runtime) -> None:
    now = d(2026, 11, 23)
    ent = runtime.catalog.create_entitlement(
        _spec(starts_at=d(2026, 10, 1), ends_at=d(2026, 11, 1), auto_renew=True), now
    )
    assert (ent.status, ent.ends_at) == (Status.ACTIVE, d(2026, 12, 1))
    assert period_bounds(runtime, ent) == [
        (d(2026, 10, 1), d(2026, 11, 1)),
        (d(2026, 11, 1), d(2026, 12, 1)),
    ]


def test_extending_an_expired_entitlement_reopens_it_with_an_audit_row(
    runtime: Runtime,
) -> None:
    now = d(2026, 11, 23)
    ent = runtime.catalog.create_entitlement(
        _spec(starts_at=d(2026, 10, 1), ends_at=d(2026, 11, 1)), now
    )
    assert ent.status == Status.EXPIRED
    runtime.catalog.update_entitlement(
        "acme", ent.id, EntitlementChange(row_version=ent.row_version, ends_at=d(2026, 12, 31)), now
    )
    assert runtime.entitlements.get(ent.id).status == Status.ACTIVE
    last = runtime.transitions.history(ent.id)[-1]
    assert (last.from_status, last.to_status, last.at) == ("EXPIRED", "ACTIVE", now)
    (balance,) = current(runtime, now)
    assert balance.usable and balance.status is Status.ACTIVE


def test_moving_the_end_back_after_a_reopen_ends_it_at_the_change(runtime: Runtime) -> None:
    """Expired at Nov 1, reopened to Dec 31, then ended at Nov 1 again: it was usable
    until the second change, so that is when it expired (one audit row each)."""
    now = d(2026, 11, 23)
    ent = runtime.catalog.create_entitlement(
        _spec(starts_at=d(2026, 10, 1), ends_at=d(2026, 11, 1)), now
    )
    for end, when in ((d(2026, 12, 31), now), (d(2026, 11, 1), d(2026, 11, 24))):
        change = EntitlementChange(row_version=ent.row_version, ends_at=end)
        runtime.catalog.update_entitlement("acme", ent.id, change, when)
        ent = runtime.entitlements.get(ent.id)
    steps = [(t.from_status, t.to_status, t.at) for t in runtime.transitions.history(ent.id)]
    assert steps == [
        ("ACTIVE", "EXPIRED", d(2026, 11, 1)),
        ("EXPIRED", "ACTIVE", now),
        ("ACTIVE", "EXPIRED", d(2026, 11, 24)),
    ]


def test_a_change_settles_first_so_the_row_version_the_caller_read_is_enough(
    runtime: Runtime,
) -> None:
    ent = renewing(runtime)
    later = d(2027, 4, 15)  # three renewals the job has not recorded
    runtime.catalog.update_entitlement(
        "acme", ent.id, EntitlementChange(row_version=ent.row_version, quantity=Decimal(50)), later
    )
    (balance,) = current(runtime, later)
    assert (balance.period_start, balance.quantity) == (d(2027, 4, 1), Decimal(50))


def test_turning_auto_renew_off_ends_it_with_its_current_term(runtime: Runtime) -> None:
    ent = renewing(runtime)
    now = d(2027, 3, 10)
    runtime.catalog.update_entitlement(
        "acme", ent.id, EntitlementChange(row_version=ent.row_version, auto_renew=False), now
    )
    assert runtime.entitlements.get(ent.id).ends_at == d(2027, 4, 1)
    (balance,) = current(runtime, d(2027, 4, 2))
    assert balance.status is Status.EXPIRED


def test_the_end_of_a_renewing_entitlement_cannot_be_moved_off_its_calendar(
    runtime: Runtime,
) -> None:
    ent = renewing(runtime)
    change = EntitlementChange(row_version=ent.row_version, ends_at=d(2027, 5, 1))
    with pytest.raises(ValueError, match="auto_renew"):
        runtime.catalog.update_entitlement("acme", ent.id, change, d(2027, 1, 5))


# -- 5. usage by when it happened ---------------------------------------------------------------


def test_usage_timed_before_a_suspension_still_counts_when_it_arrives_after(
    runtime: Runtime,
) -> None:
    now = d(2027, 1, 10)
    ent = grant(runtime, starts_at=d(2027, 1, 1), ends_at=d(2027, 2, 1))
    runtime.catalog.change_status(ent.id, OperatorAction.SUSPEND, now)
    before = runtime.ingest.ingest([event(time=now - timedelta(hours=1))], now=now)
    inside = runtime.ingest.ingest(
        [event(event_id="e2", time=now + timedelta(minutes=1))], now=now + timedelta(minutes=2)
    )
    assert (before.outcomes, inside.outcomes) == ([Outcome.ACCEPTED], [Outcome.SUSPENDED])


def test_usage_timed_between_a_suspension_and_its_resume_stays_refused(
    runtime: Runtime,
) -> None:
    ent = grant(runtime, starts_at=d(2027, 1, 1), ends_at=d(2027, 2, 1))
    runtime.catalog.change_status(ent.id, OperatorAction.SUSPEND, d(2027, 1, 10))
    runtime.catalog.change_status(ent.id, OperatorAction.RESUME, d(2027, 1, 12))
    now = d(2027, 1, 13)
    report = runtime.ingest.ingest(
        [event(event_id="in", time=d(2027, 1, 11)), event(event_id="out", time=d(2027, 1, 12))],
        now=now,
    )
    assert report.outcomes == [Outcome.SUSPENDED, Outcome.ACCEPTED]


def test_usage_timed_before_a_termination_counts_and_after_it_does_not(
    runtime: Runtime,
) -> None:
    ent = grant(runtime, starts_at=d(2027, 1, 1), ends_at=d(2027, 2, 1))
    runtime.catalog.change_status(ent.id, OperatorAction.TERMINATE, d(2027, 1, 10))
    report = runtime.ingest.ingest(
        [event(event_id="a", time=d(2027, 1, 9)), event(event_id="b", time=d(2027, 1, 11))],
        now=d(2027, 1, 12),
    )
    assert report.outcomes == [Outcome.ACCEPTED, Outcome.NO_ENTITLEMENT]


def test_a_replayed_event_is_judged_at_its_own_time_not_at_the_replay(
    runtime: Runtime,
) -> None:
    now = d(2027, 1, 10)
    ent = grant(runtime, starts_at=d(2027, 1, 1), ends_at=d(2027, 2, 1))
    runtime.catalog.change_status(ent.id, OperatorAction.SUSPEND, now)
    timeless = {k: v for k, v in event(event_id="late").items() if k != "time"}
    runtime.ingest.ingest([timeless], now=now + timedelta(minutes=1))  # suspended: dead letter
    runtime.catalog.change_status(ent.id, OperatorAction.RESUME, now + timedelta(minutes=5))
    report = runtime.replay.replay(now=now + timedelta(minutes=6))
    assert dict(report.outcomes) == {"suspended": 1}  # still timed inside the suspension


# -- 6. reserve keys are scoped ---------------------------------------------------------------


def test_a_reserve_key_of_one_customer_is_a_new_key_for_another(runtime: Runtime) -> None:
    now = d(2027, 1, 10)
    grant(runtime, quantity="100", customer="cnt", starts_at=d(2027, 1, 1), ends_at=d(2027, 2, 1))
    grant(runtime, quantity="1", customer="poor", starts_at=d(2027, 1, 1), ends_at=d(2027, 2, 1))
    granted = runtime.reserve.reserve(
        Reservation("acme", "cnt", "api_calls", Decimal(50), "shared-1"), now
    )
    poor = runtime.reserve.reserve(
        Reservation("acme", "poor", "api_calls", Decimal(50), "shared-1"), now
    )
    nobody = runtime.reserve.reserve(
        Reservation("acme", "nobody", "api_calls", Decimal(50), "shared-1"), now
    )
    assert (granted, poor, nobody) == (
        ReserveOutcome.GRANTED, ReserveOutcome.DENIED, ReserveOutcome.NO_ENTITLEMENT,
    )  # fmt: skip


def test_the_same_reserve_key_with_another_quantity_is_a_conflict(runtime: Runtime) -> None:
    now = d(2027, 1, 10)
    grant(runtime, quantity="100", starts_at=d(2027, 1, 1), ends_at=d(2027, 2, 1))
    first = Reservation("acme", "cust-1", "api_calls", Decimal(1), "k")
    assert runtime.reserve.reserve(first, now) is ReserveOutcome.GRANTED
    assert runtime.reserve.reserve(first, now) is ReserveOutcome.ALREADY_GRANTED
    with pytest.raises(ConflictError, match="idempotency key"):
        runtime.reserve.reserve(Reservation("acme", "cust-1", "api_calls", Decimal(5), "k"), now)
    (balance,) = current(runtime, now)
    assert balance.consumed == 1


# -- 9. ops figures move with the counts ------------------------------------------------------


def test_accepted_and_duplicate_events_are_counted_with_the_events(runtime: Runtime) -> None:
    """No task records them afterwards: the script counts them in the same step."""
    grant(runtime)  # NOW-10d .. NOW+20d: the events are counted at NOW, not at the real now
    runtime.ingest.ingest([event(event_id="a"), event(event_id="a")], now=NOW)
    assert runtime.stats.events() == {"accepted": 1, "duplicate": 1}


def _spec(**fields: object):  # type: ignore[no-untyped-def]
    from meterd.services.catalog import NewEntitlement

    return NewEntitlement(
        org="acme", customer_id="cust-1", feature="api_calls", quantity=Decimal(10), **fields
    )  # type: ignore[arg-type]
