"""Issue 20, item 4: one call does bounded work, however far back a renewing grant goes.

Terms that ended before the late window (no event can be counted in them any
more), and any beyond the ``MAX_CAUGHT_UP_TERMS`` latest, are one summary audit
row with no period rows; the terms an event can still land in are listed one by
one; the renewals one call records are announced by ONE notification. Every
path that catches up terms is bounded: creation, a plan, a PATCH, a resume, the
lifecycle job. A late event in a summarised term still lands in its term on the
calendar.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from meterd.core.domain import BillingType, Outcome, Status
from meterd.core.lifecycle import MAX_CAUGHT_UP_TERMS, OperatorAction
from meterd.core.redis_keys import period_field
from meterd.core.terms import Term, TermUnit
from meterd.runtime import Runtime
from meterd.services.catalog import CatalogError, EntitlementChange, NewEntitlement, NewPlan
from meterd.storage import transitions as transitions_module
from meterd.storage.models import Entitlement, EntitlementTransition, UsagePeriod
from meterd.testing import event

from .conftest import NOW
from .helpers import grant

YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
DAILY = Term.of(1, TermUnit.DAY)


def renewing_grant(
    rt: Runtime, starts_at: datetime, term: Term = DAILY, *, now: datetime = NOW, **extra: Any
) -> Entitlement:
    return rt.catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id=extra.pop("customer", "cust-1"), feature="api_calls",
            quantity=Decimal(10), starts_at=starts_at, auto_renew=True, term=term, **extra,
        ),
        now,
    )  # fmt: skip


def rows(rt: Runtime, table: type[Any], ent: Entitlement) -> int:
    with rt.database.sessions() as s:
        stmt = select(func.count()).select_from(table).where(table.entitlement_id == ent.id)
        return int(s.scalar(stmt) or 0)


def notes(rt: Runtime, ent: Entitlement) -> list[dict[str, Any]]:
    return [json.loads(n.payload) for n in rt.notification_store.all_for(ent.id)]


def summary_rows(rt: Runtime, ent: Entitlement) -> list[EntitlementTransition]:
    return [t for t in rt.transitions.history(ent.id) if " in one step (" in t.reason]


def late_window_start(rt: Runtime, now: datetime = NOW) -> datetime:
    return now - rt.late_window


def assert_listed_back_to_the_late_window(
    rt: Runtime, ent: Entitlement, now: datetime = NOW
) -> None:
    """The periods that end inside the late window are contiguous, the last ends at
    ``ends_at``, and the earliest holds the start of the late window: every instant
    an event can still be counted at has its period row."""
    start = late_window_start(rt, now)
    periods = [p for p in rt.usage.periods_of(ent.id) if p.period_end > start]  # type: ignore[operator]
    assert periods[0].period_start <= start
    assert all(a.period_end == b.period_start for a, b in itertools.pairwise(periods))
    assert periods[-1].period_end == rt.entitlements.get(ent.id).ends_at
    assert periods[-1].period_start <= now < periods[-1].period_end  # type: ignore[operator]


# -- creation ------------------------------------------------------------------------------


def test_a_daily_grant_from_year_one_lists_only_the_terms_of_the_late_window(
    runtime: Runtime,
) -> None:
    ent = renewing_grant(runtime, YEAR_ONE)
    assert (ent.status, ent.ends_at) == (Status.ACTIVE, datetime(2026, 11, 23, tzinfo=UTC))
    # The first term, then 2026-10-18 (holding the start of the late window,
    # 2026-10-18T10:00) to 2026-11-22: 36 terms, each with its audit row.
    assert rows(runtime, UsagePeriod, ent) == 1 + 36
    assert_listed_back_to_the_late_window(runtime, ent)
    (summary,) = summary_rows(runtime, ent)
    skipped = (date(2026, 10, 17) - date(1, 1, 2)).days + 1
    assert summary.reason.startswith(f"renewed {skipped:,} times")
    assert (summary.from_status, summary.to_status, summary.at) == (
        "ACTIVE",
        "ACTIVE",
        YEAR_ONE + DAY,
    )
    assert rows(runtime, EntitlementTransition, ent) == 1 + 36


def test_a_backdated_renewing_grant_sends_one_notification_for_its_history(
    runtime: Runtime,
) -> None:
    ent = renewing_grant(runtime, YEAR_ONE)
    (note,) = notes(runtime, ent)
    assert note["type"] == "entitlement.renewed"
    assert note["occurred_at"] == "2026-11-22T00:00:00.000000Z"
    assert note["data"]["caught_up"] == {
        "terms": (date(2026, 11, 22) - date(1, 1, 2)).days + 1,
        "summarised": (date(2026, 10, 17) - date(1, 1, 2)).days + 1,
        "first_at": note["data"]["caught_up"]["first_at"],  # year 1: its text is item 7's
        "until": "2026-11-23T00:00:00.000000Z",
    }


@pytest.mark.parametrize(
    ("starts_at", "term"),
    [
        (datetime(1900, 1, 1, tzinfo=UTC), DAILY),
        (datetime(1900, 1, 31, tzinfo=UTC), Term.of(1, TermUnit.MONTH)),
        (YEAR_ONE, Term.of(1, TermUnit.WEEK)),
        (YEAR_ONE, Term.of(1, TermUnit.YEAR)),
        (NOW - timedelta(days=400), DAILY),
    ],
    ids=["1900-daily", "1900-monthly", "year-one-weekly", "year-one-yearly", "400-days-daily"],
)
def test_any_backdated_renewing_grant_writes_a_bounded_number_of_rows(
    runtime: Runtime, starts_at: datetime, term: Term
) -> None:
    ent = renewing_grant(runtime, starts_at, term)
    assert rows(runtime, UsagePeriod, ent) <= 1 + MAX_CAUGHT_UP_TERMS
    assert rows(runtime, EntitlementTransition, ent) <= 1 + MAX_CAUGHT_UP_TERMS
    assert [n["type"] for n in notes(runtime, ent)] == ["entitlement.renewed"]
    assert_listed_back_to_the_late_window(runtime, ent)


def test_a_grant_from_a_plan_backdated_to_1900_is_bounded(runtime: Runtime) -> None:
    plan = runtime.catalog.create_plan(
        NewPlan(
            org="acme", key="daily", feature="api_calls", quantity=Decimal(5),
            term_value=1, term_unit=TermUnit.DAY, auto_renew=True,
        ),
        NOW,
    )  # fmt: skip
    start = datetime(1900, 1, 1, tzinfo=UTC)
    ent = runtime.catalog.entitlement_from_plan("acme", plan.id, "cust-1", start, NOW)
    assert rows(runtime, UsagePeriod, ent) == 1 + 36
    assert len(notes(runtime, ent)) == 1
    assert_listed_back_to_the_late_window(runtime, ent)


def test_a_pay_per_use_grant_from_year_one_opens_only_the_months_of_the_late_window(
    runtime: Runtime,
) -> None:
    ent = grant(runtime, starts_at=YEAR_ONE, ends_at=None, billing_type=BillingType.PAY_PER_USE)
    months = [(p.period_start, p.period_end) for p in runtime.usage.periods_of(ent.id)]
    october, november, december = (datetime(2026, m, 1, tzinfo=UTC) for m in (10, 11, 12))
    assert months == [
        (YEAR_ONE, datetime(1, 2, 1, tzinfo=UTC)), (october, november), (november, december),
    ]  # fmt: skip
    assert runtime.entitlements.get(ent.id).next_period_at == december
    (summary,) = summary_rows(runtime, ent)
    assert summary.reason.startswith(f"calendar month opened: {12 * 2025 + 8:,} months")
    (note,) = notes(runtime, ent)
    assert note["type"] == "entitlement.period_opened"
    assert note["data"]["caught_up"]["terms"] == 12 * 2025 + 10


def test_a_pay_per_use_grant_that_ended_in_1900_opens_no_month_of_its_history(
    runtime: Runtime,
) -> None:
    end = datetime(1900, 1, 1, tzinfo=UTC)
    ent = grant(runtime, starts_at=YEAR_ONE, ends_at=end, billing_type=BillingType.PAY_PER_USE)
    assert ent.status == Status.EXPIRED
    assert rows(runtime, UsagePeriod, ent) == 1  # the month of starts_at, made at creation
    renewed, expired = notes(runtime, ent)
    assert renewed["type"] == "entitlement.period_opened"
    assert renewed["data"]["caught_up"]["terms"] == 1899 * 12 - 1
    assert renewed["data"]["caught_up"]["summarised"] == 1899 * 12 - 1
    assert renewed["data"]["caught_up"]["until"] == "1900-01-01T00:00:00.000000Z"
    assert expired["type"] == "entitlement.status_changed"
    assert expired["data"]["to_status"] == "EXPIRED"


def test_a_renewing_term_shorter_than_an_hour_is_refused(runtime: Runtime) -> None:
    with pytest.raises(CatalogError, match="at least 1 hour"):
        grant(runtime, starts_at=NOW, ends_at=NOW + timedelta(minutes=59), auto_renew=True)


def test_turning_auto_renew_on_over_a_term_shorter_than_an_hour_is_refused(
    runtime: Runtime,
) -> None:
    ent = grant(runtime, starts_at=NOW - timedelta(minutes=30), ends_at=NOW + timedelta(minutes=1))
    change = EntitlementChange(row_version=ent.row_version, auto_renew=True)
    with pytest.raises(CatalogError, match="at least 1 hour"):
        runtime.catalog.update_entitlement("acme", ent.id, change, NOW)


# -- changes, operator actions and the job -------------------------------------------------


def test_turning_auto_renew_on_for_a_grant_ended_in_1900_is_bounded(runtime: Runtime) -> None:
    start = datetime(1900, 1, 1, tzinfo=UTC)
    ent = grant(runtime, starts_at=start, ends_at=start + DAY)
    assert ent.status == Status.EXPIRED
    change = EntitlementChange(row_version=ent.row_version, auto_renew=True)
    runtime.catalog.update_entitlement("acme", ent.id, change, NOW)
    assert rows(runtime, UsagePeriod, ent) == 1 + 36
    assert_listed_back_to_the_late_window(runtime, ent)
    assert [n["type"] for n in notes(runtime, ent)] == [
        "entitlement.status_changed",  # expired at its end, when created
        "entitlement.status_changed",  # reopened: EXPIRED -> ACTIVE, a summary
        "entitlement.renewed",
    ]


def test_resuming_after_years_of_suspension_is_bounded(runtime: Runtime) -> None:
    ent = renewing_grant(runtime, NOW - DAY)
    runtime.catalog.change_status(ent.id, OperatorAction.SUSPEND, NOW)
    later = NOW + timedelta(days=3650)
    runtime.catalog.change_status(ent.id, OperatorAction.RESUME, later)
    # The term of NOW - 1 day, its renewal at creation, then 36 terms back from the
    # one containing `later`.
    assert rows(runtime, UsagePeriod, ent) == 2 + 36
    assert_listed_back_to_the_late_window(runtime, ent, later)
    kinds = [n["type"] for n in notes(runtime, ent)]
    assert kinds.count("entitlement.renewed") == 2  # one at creation, one at the resume


def test_the_job_catches_up_a_decade_of_daily_terms_in_bounded_rows(runtime: Runtime) -> None:
    ent = renewing_grant(runtime, NOW - timedelta(hours=1))
    later = NOW + timedelta(days=3650)
    report = runtime.lifecycle.advance_all(later)
    assert report.transitions == 1 + 36
    assert rows(runtime, UsagePeriod, ent) == 1 + 36
    assert_listed_back_to_the_late_window(runtime, ent, later)
    (note,) = notes(runtime, ent)
    assert note["data"]["caught_up"]["terms"] == 3650


def test_the_job_over_a_grant_pending_for_years_is_bounded(runtime: Runtime) -> None:
    ent = renewing_grant(runtime, NOW + DAY)
    assert ent.status == Status.PENDING
    runtime.lifecycle.advance_all(NOW + timedelta(days=3650))
    assert rows(runtime, UsagePeriod, ent) == 1 + 36
    assert [n["type"] for n in notes(runtime, ent)] == [
        "entitlement.status_changed",
        "entitlement.renewed",
    ]


def test_renewals_missed_by_the_job_are_one_notification(runtime: Runtime) -> None:
    ent = renewing_grant(runtime, NOW - timedelta(hours=1))
    runtime.lifecycle.advance_all(NOW + timedelta(days=2, hours=1))
    assert rows(runtime, UsagePeriod, ent) == 3  # each term still in the late window
    (note,) = notes(runtime, ent)
    assert note["data"]["caught_up"]["terms"] == 2
    assert note["data"]["caught_up"]["summarised"] == 0


def test_beyond_the_latest_terms_even_terms_inside_the_late_window_are_summarised(
    runtime: Runtime,
) -> None:
    hourly = Term(length=timedelta(hours=1))
    ent = renewing_grant(runtime, NOW - timedelta(days=60), hourly)
    assert rows(runtime, UsagePeriod, ent) == 1 + MAX_CAUGHT_UP_TERMS
    (summary,) = summary_rows(runtime, ent)
    assert summary.reason.startswith(f"renewed {60 * 24 - MAX_CAUGHT_UP_TERMS:,} times")


# -- late events still land in their term ---------------------------------------------------


def test_a_late_event_in_a_summarised_term_lands_in_its_term_on_the_calendar(
    runtime: Runtime,
) -> None:
    hourly = Term(length=timedelta(hours=1))
    ent = renewing_grant(runtime, NOW - timedelta(days=60), hourly)
    at = NOW - timedelta(days=10, minutes=30)  # inside the late window, 240 terms ago
    term_start = NOW - timedelta(days=10, hours=1)
    assert term_start not in {p.period_start for p in runtime.usage.periods_of(ent.id)}

    report = runtime.ingest.ingest([event(time=at, quantity="4")], now=NOW)
    assert report.outcomes == [Outcome.ACCEPTED]
    field = period_field(ent.id, term_start)
    assert runtime.counters.live_totals("acme", "cust-1", [field]) == {field: 4_000_000}
    (at_the_time,) = runtime.balance.balances("acme", "cust-1", "api_calls", at)
    assert (at_the_time.period_start, at_the_time.consumed) == (term_start, Decimal(4))

    too_old = late_window_start(runtime) - timedelta(minutes=1)
    refused = runtime.ingest.ingest([event(event_id="old", time=too_old)], now=NOW)
    assert refused.outcomes == [Outcome.LATE]  # what makes summarising history safe

    runtime.flush.flush_all(NOW)
    landed = {p.period_start: (p.period_end, p.consumed) for p in runtime.usage.periods_of(ent.id)}
    assert landed[term_start] == (term_start + timedelta(hours=1), Decimal(4))
    (now_balance,) = runtime.balance.balances("acme", "cust-1", "api_calls", NOW)
    assert now_balance.consumed == 0  # the current term has none of it


# -- the job's batches and runs ---------------------------------------------------------------


def test_a_lifecycle_batch_records_at_most_its_step_budget(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transitions_module, "MAX_STEPS_PER_BATCH", 100)
    grants = [renewing_grant(runtime, NOW - timedelta(hours=1), customer=f"c{i}") for i in range(5)]
    later = NOW + timedelta(days=3650)
    first = runtime.lifecycle.advance(later, batch_size=1000)
    assert (first.entitlements, first.transitions) == (2, 2 * 37)  # a third would pass 100
    runtime.lifecycle.advance_all(later)
    assert [rows(runtime, UsagePeriod, ent) for ent in grants] == [1 + 36] * 5


def test_a_lifecycle_run_stops_after_its_last_batch_and_the_next_run_goes_on(
    runtime: Runtime,
) -> None:
    grants = [grant(runtime, customer=f"c{i}", ends_at=NOW + DAY) for i in range(3)]
    later = NOW + 2 * DAY
    first = runtime.lifecycle.advance_all(later, batch_size=1, max_batches=2)
    assert (first.entitlements, first.more_due) == (2, True)
    second = runtime.lifecycle.advance_all(later, batch_size=1, max_batches=2)
    assert (second.entitlements, second.more_due) == (1, False)
    assert {runtime.entitlements.get(g.id).status for g in grants} == {Status.EXPIRED}
