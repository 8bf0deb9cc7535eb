"""The lifecycle job makes rollover carries final (``services/rollover.py``,
``storage/rollover.py``): a carry is stored only once nothing is left to count in
the term it carries from (the late window, the flush and ``CLOCK_MARGIN`` behind
now), a late event before then still changes it, and each stored carry is
audited once, whatever finalisers race."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from meterd import tasks
from meterd.runtime import Runtime
from meterd.services.lifecycle import LifecycleReport
from meterd.storage.models import Entitlement, EntitlementTransition, UsagePeriod
from meterd.storage.rollover import RolloverStore

from .conftest import NOW
from .helpers import grant
from .test_rollover_ingest import adder
from .test_rollover_ingest import usage as usage_at_scale_0


def d(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def backdated(rt: Runtime) -> Entitlement:
    """100 a month from 2026-07-10, carrying up to 50, created at NOW (2026-11-22):
    terms from Jul 10 (its first), Aug 10, Sep 10 (summarised: no rows), Oct 10 and
    Nov 10. The rollover is set after the job recorded the renewals (no API sets it
    yet), so no carry is final yet."""
    (ent,) = backdated_grants(rt, ["cust-1"])
    return ent


def backdated_grants(rt: Runtime, customers: list[str]) -> list[Entitlement]:
    """``backdated``'s grant for each customer."""
    ents = [
        grant(
            rt,
            customer,
            quantity="100",
            starts_at=d(2026, 7, 10),
            ends_at=d(2026, 8, 10),
            auto_renew=True,
        )
        for customer in customers
    ]
    rt.lifecycle.advance_all(NOW)
    with rt.database.sessions.begin() as s:
        s.execute(
            update(Entitlement)
            .where(Entitlement.id.in_([ent.id for ent in ents]))
            .values(rollover_max=Decimal(50), rollover_min=Decimal(0))
        )
    return ents


def stored(rt: Runtime, ent: Entitlement) -> dict[datetime, Decimal | None]:
    return {p.period_start: p.rolled_over for p in rt.usage.periods_of(ent.id)}


def carry_audit(rt: Runtime, ent: Entitlement) -> list[EntitlementTransition]:
    return [t for t in rt.transitions.history(ent.id) if t.reason.startswith("rollover:")]


def usage(customer: str, at: datetime, units: int) -> Any:
    return usage_at_scale_0(customer, at, units, scale=6)  # the feature's scale


def test_the_job_stores_a_carry_whose_term_before_is_past_the_window(runtime: Runtime) -> None:
    """At NOW the Sep 10 term ended (Oct 10) before the late window (Oct 18): the Oct
    10 term's carry is final (50: Sep 10 was never used). The Nov 10 term's is not
    (its term before ended Nov 10, within the window)."""
    ent = backdated(runtime)
    report = runtime.lifecycle.advance_all(NOW)
    assert report.carries_finalised == 1
    assert stored(runtime, ent) == {
        d(2026, 7, 10): None,  # the first term carries nothing and is never looked at
        d(2026, 10, 10): Decimal(50),
        d(2026, 11, 10): None,
    }
    assert runtime.lifecycle.advance_all(NOW).carries_finalised == 0  # once


def test_a_late_event_changes_the_carry_until_the_window_and_the_flush_are_past(
    runtime: Runtime,
) -> None:
    """The Nov 10 term carries from the Oct 10 term (Oct 10 to Nov 10, holding 150),
    whose late window closes on Dec 15 00:00, plus CLOCK_MARGIN (10 minutes). A late
    event of 120 into it on Dec 14 shrinks the carry from 50 to 30; the job stores
    nothing while that event waits for the flush, nor within the margin, and
    stores 30, the figure with the late event, once both are past."""
    ent = backdated(runtime)
    before_late = d(2026, 12, 14, 23)
    runtime.lifecycle.advance_all(before_late)  # records the Dec 10 renewal
    assert stored(runtime, ent)[d(2026, 11, 10)] is None
    runtime.resolution.refresh([("acme", "cust-1", "api_calls")], before_late)
    late = usage("cust-1", d(2026, 11, 9, 23, 30), 120)  # within the window of Dec 14 23:00
    assert adder(runtime)([late], now=before_late) == ["a"]
    shown = {u.period.start: u.rolled_over for u in runtime.queries.periods("acme", ent.id, NOW)}
    assert shown[d(2026, 11, 10)] == Decimal(30)  # was 50: the late event counts

    past_window = d(2026, 12, 15, 1)
    assert runtime.lifecycle.advance_all(past_window).carries_finalised == 0  # not flushed
    assert stored(runtime, ent)[d(2026, 11, 10)] is None
    runtime.flush.flush_all(past_window)
    within_margin = d(2026, 12, 15, 0, 5)
    assert runtime.lifecycle.advance_all(within_margin).carries_finalised == 0
    assert stored(runtime, ent)[d(2026, 11, 10)] is None

    assert runtime.lifecycle.advance_all(past_window).carries_finalised == 1
    assert stored(runtime, ent)[d(2026, 11, 10)] == Decimal(30)
    assert stored(runtime, ent)[d(2026, 12, 10)] is None  # Nov 10 ends Dec 10: not final
    # the figure stored is the one every read computed: the Nov 10 term still holds 130
    shown_q = {u.period.start: u.period.quantity for u in runtime.queries.periods(
        "acme", ent.id, past_window
    )}  # fmt: skip
    assert shown_q[d(2026, 11, 10)] == Decimal(130)


def test_the_audit_says_what_carried_from_which_term(runtime: Runtime) -> None:
    ent = backdated(runtime)
    report = runtime.lifecycle.advance_all(NOW)
    (row,) = carry_audit(runtime, ent)
    assert row.reason == (
        "rollover: carried 50 from the term"
        " 2026-09-10T00:00:00.000000Z..2026-10-10T00:00:00.000000Z (final)"
    )
    assert (row.from_status, row.to_status) == ("ACTIVE", "ACTIVE")
    assert row.job_run_id == report.job_run_id
    assert row.at == NOW and row.recorded_at == NOW


def test_carries_made_final_together_are_one_audit_row_listing_each(runtime: Runtime) -> None:
    """A job run after a long pause finds the Oct 10 and Nov 10 carries final at once:
    one audit row for the entitlement, each carry in order (50, then 50 again: the Oct
    10 term, holding 150, was never used)."""
    ent = backdated(runtime)
    later = d(2026, 12, 16)
    report = runtime.lifecycle.advance_all(later)
    assert report.carries_finalised == 2
    (row,) = carry_audit(runtime, ent)
    assert row.reason == (
        "rollover: carried 50 from the term"
        " 2026-09-10T00:00:00.000000Z..2026-10-10T00:00:00.000000Z;"
        " carried 50 from the term"
        " 2026-10-10T00:00:00.000000Z..2026-11-10T00:00:00.000000Z (final)"
    )


def test_an_entitlement_without_rollover_stores_and_audits_nothing(runtime: Runtime) -> None:
    ent = grant(
        runtime, quantity="100", starts_at=d(2026, 7, 10), ends_at=d(2026, 8, 10), auto_renew=True
    )
    assert runtime.lifecycle.advance_all(NOW).carries_finalised == 0
    assert set(stored(runtime, ent).values()) == {None}
    assert carry_audit(runtime, ent) == []


def test_a_rollover_max_of_zero_stores_zeros_and_audits_nothing(runtime: Runtime) -> None:
    ent = backdated(runtime)
    with runtime.database.sessions.begin() as s:
        s.execute(update(Entitlement).where(Entitlement.id == ent.id).values(rollover_max=0))
    assert runtime.lifecycle.advance_all(NOW).carries_finalised == 0
    assert stored(runtime, ent)[d(2026, 10, 10)] == Decimal(0)
    assert carry_audit(runtime, ent) == []


def test_the_audit_row_moves_past_a_step_recorded_at_the_same_instant(runtime: Runtime) -> None:
    """uq_transitions_step: a status step of the same instant is never overwritten nor
    refused; the carry's row is a microsecond later."""
    ent = backdated(runtime)
    with runtime.database.sessions.begin() as s:
        org = s.scalars(select(Entitlement.org_id).where(Entitlement.id == ent.id)).one()
        s.add(
            EntitlementTransition(
                org_id=org, entitlement_id=ent.id, from_status="ACTIVE", to_status="ACTIVE",
                at=NOW, recorded_at=NOW, reason="a step of the same instant", job_run_id="t",
            )
        )  # fmt: skip
    assert runtime.lifecycle.advance_all(NOW).carries_finalised == 1
    (row,) = carry_audit(runtime, ent)
    assert row.at == NOW + timedelta(microseconds=1)


def test_racing_jobs_store_and_audit_each_carry_once(runtime: Runtime) -> None:
    """Two lifecycle runs at once (two beats), over several entitlements: each carry
    is stored once and audited once; the runs' counts add up to them."""
    ents = backdated_grants(runtime, [f"cust-{i}" for i in range(6)])
    later = d(2026, 12, 16)
    barrier = threading.Barrier(2)
    reports: list[LifecycleReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            reports.append(runtime.lifecycle.advance_all(later, batch_size=2))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.carries_finalised for r in reports) == 2 * len(ents)
    for ent in ents:
        assert stored(runtime, ent)[d(2026, 10, 10)] == Decimal(50)
        assert stored(runtime, ent)[d(2026, 11, 10)] == Decimal(50)
        audited = carry_audit(runtime, ent)
        assert sum(row.reason.count("carried") for row in audited) == 2


def race_finalisers(store: RolloverStore, now: datetime, names: list[str]) -> list[int]:
    """Finalisers started together (one thread each): the carries each stored."""
    barrier = threading.Barrier(len(names))
    done: list[int] = []

    def finalise(name: str) -> None:
        barrier.wait()
        done.append(store.finalise(NOW - timedelta(days=36), now=now, job_run_id=name).carries)

    threads = [threading.Thread(target=finalise, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(done)


def test_racing_finalisers_of_one_entitlement_audit_each_carry_once(runtime: Runtime) -> None:
    """Rounds of two finalisers racing on one carry: one of them stores and audits
    it, never both (the carry is set back to unknown between rounds)."""
    store = RolloverStore(runtime.database.sessions)
    ent = backdated(runtime)
    for round_no in range(5):
        with runtime.database.sessions.begin() as s:
            s.execute(
                update(UsagePeriod)
                .where(UsagePeriod.entitlement_id == ent.id)
                .values(rolled_over=None)
            )
        now = NOW + timedelta(seconds=round_no)
        assert race_finalisers(store, now, [f"r{round_no}-a", f"r{round_no}-b"]) == [0, 1]
        assert len(carry_audit(runtime, ent)) == round_no + 1


def test_the_task_reports_the_carries_finalised(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    backdated(runtime)
    monkeypatch.setattr(tasks, "get_runtime", lambda: runtime)
    monkeypatch.setattr(tasks, "utcnow", lambda: NOW)
    result = tasks.lifecycle_advance.run()
    assert result["carries_finalised"] == 1
    assert result["transitions"] == 0
