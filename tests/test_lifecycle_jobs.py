"""The lifecycle job: transitions applied once, recorded, caught up, raced safely."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from meterd.core.domain import BillingType, Outcome, Status
from meterd.core.errors import StaleVersionError
from meterd.core.lifecycle import OperatorAction, TransitionRefused
from meterd.runtime import Runtime
from meterd.services.catalog import CatalogError
from meterd.storage.models import Entitlement, EntitlementTransition
from meterd.testing import event

from .conftest import NOW
from .helpers import grant


def status_of(rt: Runtime, entitlement_id: object) -> str:
    return rt.entitlements.get(entitlement_id).status  # type: ignore[arg-type]


def transition_count(rt: Runtime) -> int:
    with rt.database.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(EntitlementTransition)) or 0)


def test_pending_entitlement_is_activated_at_starts_at(runtime: Runtime) -> None:
    ent = grant(runtime, starts_at=NOW + timedelta(hours=1))
    assert ent.status == Status.PENDING
    assert runtime.lifecycle.advance(NOW + timedelta(minutes=59)).transitions == 0
    report = runtime.lifecycle.advance(NOW + timedelta(hours=1))
    assert report.transitions == 1
    assert status_of(runtime, ent.id) == Status.ACTIVE
    (step,) = runtime.transitions.history(ent.id)
    assert (step.from_status, step.to_status, step.at) == ("PENDING", "ACTIVE", ent.starts_at)
    assert step.job_run_id == report.job_run_id and step.reason


def test_expiry_with_grace_passes_through_grace(runtime: Runtime) -> None:
    ends = NOW + timedelta(days=1)
    ent = grant(runtime, ends_at=ends, grace=timedelta(days=2))
    runtime.lifecycle.advance(ends)
    assert status_of(runtime, ent.id) == Status.GRACE
    runtime.lifecycle.advance(ends + timedelta(days=2))
    assert status_of(runtime, ent.id) == Status.EXPIRED
    steps = [(t.from_status, t.to_status) for t in runtime.transitions.history(ent.id)]
    assert steps == [("ACTIVE", "GRACE"), ("GRACE", "EXPIRED")]


def test_running_the_job_again_changes_nothing(runtime: Runtime) -> None:
    grant(runtime, ends_at=NOW + timedelta(days=1))
    later = NOW + timedelta(days=2)
    assert runtime.lifecycle.advance_all(later).transitions == 1
    assert runtime.lifecycle.advance_all(later).transitions == 0
    assert transition_count(runtime) == 1


def test_a_missed_day_catches_up_every_transition_in_order(runtime: Runtime) -> None:
    start = NOW + timedelta(hours=1)
    ent = grant(
        runtime, starts_at=start, ends_at=start + timedelta(hours=2), grace=timedelta(hours=3)
    )
    report = runtime.lifecycle.advance_all(NOW + timedelta(days=1))
    assert report.transitions == 3
    steps = runtime.transitions.history(ent.id)
    assert [(t.to_status, t.at) for t in steps] == [
        ("ACTIVE", start),
        ("GRACE", start + timedelta(hours=2)),
        ("EXPIRED", start + timedelta(hours=5)),
    ]


def test_operator_states_are_left_alone(runtime: Runtime) -> None:
    from meterd.storage.models import Entitlement

    ent = grant(runtime, ends_at=NOW + timedelta(days=1))
    with runtime.database.sessions.begin() as s:
        row = s.get(Entitlement, ent.id)
        assert row is not None
        row.status = Status.SUSPENDED.value
    assert runtime.lifecycle.advance_all(NOW + timedelta(days=30)).transitions == 0


def test_batches_are_bounded_and_advance_all_drains_them(runtime: Runtime) -> None:
    for i in range(7):
        grant(runtime, f"c{i}", ends_at=NOW + timedelta(hours=1))
    later = NOW + timedelta(hours=2)
    assert runtime.lifecycle.advance(later, batch_size=3).entitlements == 3
    assert runtime.lifecycle.advance_all(later, batch_size=3).entitlements == 4


def test_two_jobs_racing_apply_each_transition_once(runtime: Runtime) -> None:
    for i in range(60):
        grant(runtime, f"c{i}", ends_at=NOW + timedelta(hours=1), grace=timedelta(hours=1))
    later = NOW + timedelta(days=1)
    reports = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def job() -> None:
        barrier.wait()
        try:
            reports.append(runtime.lifecycle.advance_all(later, batch_size=10))
        except BaseException as exc:  # a job must never fail because another ran
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.entitlements for r in reports) == 60
    assert transition_count(runtime) == 120  # ACTIVE->GRACE->EXPIRED, once each


#: The first term ends an hour after the entitlements are created (at NOW).
TERM_END = NOW + timedelta(hours=1)


def renewing(runtime: Runtime, **extra: object):  # type: ignore[no-untyped-def]
    return grant(
        runtime,
        quantity="10",
        starts_at=TERM_END - timedelta(days=30),
        ends_at=TERM_END,
        auto_renew=True,
        **extra,
    )


def test_a_renewal_replaces_the_resolution_data_so_ingest_sees_the_new_term_at_once(
    runtime: Runtime,
) -> None:
    renewing(runtime)
    in_old_term = event(event_id="a", time=TERM_END - timedelta(minutes=1))
    assert runtime.ingest.ingest([in_old_term], now=TERM_END).outcomes == [Outcome.ACCEPTED]
    runtime.lifecycle.advance(TERM_END)  # the cached entry still ends at TERM_END
    in_new_term = event(event_id="b", time=TERM_END + timedelta(minutes=1))
    assert runtime.ingest.ingest([in_new_term], now=TERM_END).outcomes == [Outcome.ACCEPTED]


def test_expiry_needs_no_cache_refresh_because_ingest_reads_the_window(
    runtime: Runtime,
) -> None:
    ends = NOW + timedelta(hours=1)
    grant(runtime, ends_at=ends)
    assert runtime.ingest.ingest([event(event_id="a")], now=NOW).outcomes == [Outcome.ACCEPTED]
    after_end = event(event_id="b", time=ends)
    # The lifecycle job has not run: the cached window already refuses it.
    assert runtime.ingest.ingest([after_end], now=ends).outcomes == [Outcome.NO_ENTITLEMENT]


def test_auto_renew_opens_the_next_term_with_the_renewal_quantity(runtime: Runtime) -> None:
    from decimal import Decimal

    ent = renewing(runtime, renewal_quantity=Decimal(25))
    report = runtime.lifecycle.advance(TERM_END)
    assert report.by_target == {"ACTIVE": 1}
    row = runtime.entitlements.get(ent.id)
    assert (row.status, row.ends_at) == ("ACTIVE", TERM_END + timedelta(days=30))
    periods = runtime.usage.periods_of(ent.id)
    assert [(p.period_start, p.period_end, p.quantity) for p in periods] == [
        (TERM_END - timedelta(days=30), TERM_END, Decimal(10)),
        (TERM_END, TERM_END + timedelta(days=30), Decimal(25)),
    ]
    (step,) = runtime.transitions.history(ent.id)
    assert (step.from_status, step.to_status, step.reason) == ("ACTIVE", "ACTIVE", "renewed")


def test_a_trial_does_not_renew_it_ends(runtime: Runtime) -> None:
    from meterd.core.domain import ContractMode

    ent = renewing(runtime, contract_mode=ContractMode.TRIAL)
    runtime.lifecycle.advance(TERM_END)
    assert runtime.entitlements.get(ent.id).status == "EXPIRED"


def test_usage_pending_for_the_closed_term_lands_in_it_after_renewal(runtime: Runtime) -> None:
    from decimal import Decimal

    ent = renewing(runtime)
    # Counted before the renewal, not flushed yet:
    runtime.ingest.ingest(
        [event(event_id="old", quantity="4", time=TERM_END - timedelta(hours=1))], now=TERM_END
    )
    runtime.lifecycle.advance(TERM_END)
    # A late event of the old term, and one of the new term, after the renewal:
    runtime.ingest.ingest(
        [
            event(event_id="late", quantity="2", time=TERM_END - timedelta(minutes=5)),
            event(event_id="new", quantity="1", time=TERM_END + timedelta(minutes=5)),
        ],
        now=TERM_END + timedelta(minutes=10),
    )
    runtime.flush.flush_all(TERM_END + timedelta(minutes=10))
    periods = runtime.usage.periods_of(ent.id)
    assert [p.consumed for p in periods] == [Decimal(6), Decimal(1)]


def test_missed_renewals_open_every_term(runtime: Runtime) -> None:
    ent = renewing(runtime)
    # 64 days: each missed term still ends inside the 35-day late window (terms
    # that ended before it are summarised: tests/test_bounded_catch_up.py).
    runtime.lifecycle.advance(TERM_END + timedelta(days=64))
    periods = runtime.usage.periods_of(ent.id)
    assert len(periods) == 4  # the original term and three renewals
    assert runtime.entitlements.get(ent.id).ends_at == TERM_END + timedelta(days=90)


# -- PAY_PER_USE calendar months ---------------------------------------------------------

DECEMBER = datetime(2026, 12, 1, tzinfo=UTC)


def months_of(rt: Runtime, entitlement_id: object) -> list[tuple[int, Decimal]]:
    periods = rt.usage.periods_of(entitlement_id)  # type: ignore[arg-type]
    return [(p.period_start.month, p.consumed) for p in periods]


def pay_per_use(rt: Runtime) -> Entitlement:
    return grant(rt, quantity="1000", billing_type=BillingType.PAY_PER_USE, ends_at=None)


def test_pay_per_use_opens_each_calendar_month_ahead_of_usage(runtime: Runtime) -> None:
    ent = pay_per_use(runtime)
    assert months_of(runtime, ent.id) == [(11, Decimal(0))]
    assert runtime.lifecycle.advance(DECEMBER - timedelta(microseconds=1)).transitions == 0
    report = runtime.lifecycle.advance(DECEMBER)
    assert report.transitions == 1
    assert months_of(runtime, ent.id) == [(11, Decimal(0)), (12, Decimal(0))]
    (step,) = runtime.transitions.history(ent.id)
    assert (step.from_status, step.to_status, step.at) == ("ACTIVE", "ACTIVE", DECEMBER)
    assert runtime.lifecycle.advance(DECEMBER + timedelta(days=1)).transitions == 0


def test_a_month_already_opened_by_its_first_usage_is_kept_with_its_usage(
    runtime: Runtime,
) -> None:
    ent = pay_per_use(runtime)
    early = event(event_id="dec", time=DECEMBER + timedelta(minutes=1), quantity="4")
    assert runtime.ingest.ingest([early], now=DECEMBER + timedelta(minutes=1)).outcomes == [
        Outcome.ACCEPTED
    ]
    runtime.flush.flush_all(DECEMBER + timedelta(minutes=1))  # opens December first
    runtime.lifecycle.advance(DECEMBER + timedelta(minutes=2))
    assert months_of(runtime, ent.id) == [(11, Decimal(0)), (12, Decimal(4))]


def test_a_pay_per_use_entitlement_cannot_auto_renew(runtime: Runtime) -> None:
    with pytest.raises(CatalogError, match="calendar month"):
        grant(runtime, billing_type=BillingType.PAY_PER_USE, auto_renew=True)


# -- operator actions ----------------------------------------------------------------------


def test_a_suspended_entitlement_refuses_usage_at_once(runtime: Runtime) -> None:
    ent = grant(runtime)
    runtime.catalog.change_status(ent.id, OperatorAction.SUSPEND, NOW, reason="unpaid invoice")
    assert runtime.ingest.ingest([event(event_id="a")], now=NOW).outcomes == [Outcome.SUSPENDED]
    (step,) = runtime.transitions.history(ent.id)
    assert (step.from_status, step.to_status, step.reason, step.job_run_id) == (
        "ACTIVE",
        "SUSPENDED",
        "unpaid invoice",
        "operator",
    )


def test_resuming_restores_usage_and_the_job_catches_up_what_fell_due(runtime: Runtime) -> None:
    ends = NOW + timedelta(days=1)
    ent = grant(runtime, ends_at=ends)
    runtime.catalog.change_status(ent.id, OperatorAction.SUSPEND, NOW)
    later = ends + timedelta(days=1)
    assert runtime.lifecycle.advance(later).transitions == 0  # the clock leaves SUSPENDED alone
    resumed = runtime.catalog.change_status(ent.id, OperatorAction.RESUME, NOW + timedelta(hours=1))
    assert resumed.status == Status.ACTIVE
    in_term = event(event_id="b", time=NOW + timedelta(hours=2))
    assert runtime.ingest.ingest([in_term], now=NOW + timedelta(hours=2)).outcomes == [
        Outcome.ACCEPTED
    ]
    runtime.lifecycle.advance(later)
    steps = [(t.from_status, t.to_status, t.at) for t in runtime.transitions.history(ent.id)]
    assert steps[-1] == ("ACTIVE", "EXPIRED", ends)


def test_resuming_an_entitlement_suspended_in_its_grace_returns_it_to_grace(
    runtime: Runtime,
) -> None:
    ends = NOW - timedelta(days=1)
    ent = grant(runtime, starts_at=NOW - timedelta(days=10), ends_at=ends, grace=timedelta(days=5))
    assert status_of(runtime, ent.id) == Status.GRACE
    runtime.catalog.change_status(ent.id, OperatorAction.SUSPEND, NOW)
    resumed = runtime.catalog.change_status(ent.id, OperatorAction.RESUME, NOW + timedelta(hours=1))
    assert resumed.status == Status.GRACE
    steps = [(t.from_status, t.to_status) for t in runtime.transitions.history(ent.id)]
    assert steps[-2:] == [("GRACE", "SUSPENDED"), ("SUSPENDED", "GRACE")]
    runtime.lifecycle.advance(ends + timedelta(days=6))
    assert status_of(runtime, ent.id) == Status.EXPIRED


def test_a_terminated_entitlement_is_final(runtime: Runtime) -> None:
    ent = grant(runtime, ends_at=NOW + timedelta(days=1))
    runtime.catalog.change_status(ent.id, OperatorAction.TERMINATE, NOW)
    for action in OperatorAction:
        with pytest.raises(TransitionRefused):
            runtime.catalog.change_status(ent.id, action, NOW + timedelta(minutes=1))
    assert runtime.lifecycle.advance(NOW + timedelta(days=30)).transitions == 0
    assert status_of(runtime, ent.id) == Status.TERMINATED
    assert runtime.ingest.ingest([event(event_id="c")], now=NOW).outcomes == [
        Outcome.NO_ENTITLEMENT
    ]


def test_a_status_change_on_a_stale_row_version_is_refused(runtime: Runtime) -> None:
    ent = grant(runtime)
    runtime.catalog.change_status(ent.id, OperatorAction.SUSPEND, NOW)
    with pytest.raises(StaleVersionError):
        runtime.catalog.change_status(
            ent.id, OperatorAction.RESUME, NOW, expected_version=ent.row_version
        )
    assert status_of(runtime, ent.id) == Status.SUSPENDED


def test_an_operator_action_is_notified(runtime: Runtime) -> None:
    ent = grant(runtime)
    runtime.catalog.change_status(ent.id, OperatorAction.SUSPEND, NOW)
    (note,) = runtime.notification_store.all_for(ent.id)
    assert note.type == "entitlement.status_changed"


def test_the_lapsed_renewing_scan_reads_only_its_partial_index(runtime: Runtime) -> None:
    """The job looks for renewing entitlements recorded as lapsed on every run: the
    query must match the partial index's predicate, or PostgreSQL would read every
    EXPIRED row each time (the planner cannot prove `auto_renew IS true` implies
    `auto_renew`)."""
    from meterd.storage.transitions import LAPSED_RENEWING

    if runtime.database.dialect != "postgresql":
        pytest.skip("a PostgreSQL planner property (runs in the real configuration)")
    query = select(Entitlement.id).where(LAPSED_RENEWING)
    sql = str(query.compile(runtime.database.engine))
    with runtime.database.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql))
    assert "ix_entitlements_lapsed_renewing" in plan, plan
