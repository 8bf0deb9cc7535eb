"""Void and reset of a grant (issue 23, CONTRACT 6b): a void from an instant (now or
ahead) takes no usage timed from it on and keeps what was timed before, a reset
closes the current period at an instant and opens a fresh allowance from it; each
audited, notified, retried without effect, and seen by ingest, reserve and every
read at once."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterd.core.domain import BillingType, Outcome, Status
from meterd.core.errors import ConflictError, InvalidError
from meterd.core.notifications import NotificationType
from meterd.core.timeutil import isoformat
from meterd.runtime import Runtime
from meterd.services.reserve import Reservation
from meterd.testing import event

from .conftest import NOW
from .helpers import assert_log_matches_periods, grant

AHEAD = NOW + timedelta(minutes=10)


def ingest(rt: Runtime, *events: dict[str, Any], now: Any = NOW) -> list[Outcome]:
    return rt.ingest.ingest(list(events), now=now).outcomes


def consumed(rt: Runtime, now: Any = NOW) -> Decimal:
    return rt.balance.value("acme", "cust-1", "api_calls", now).consumed


def steps(rt: Runtime, ent: Any) -> list[tuple[str, str, str]]:
    return [
        (str(t.from_status), str(t.to_status), t.reason) for t in rt.queries.history("acme", ent.id)
    ]


def notified(rt: Runtime, ent: Any) -> list[str]:
    return [n.type for n in rt.notification_store.all_for(ent.id)]


# -- void -------------------------------------------------------------------------------


def test_a_void_now_keeps_usage_timed_before_and_takes_none_after(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100")
    assert ingest(runtime, event(event_id="before", quantity="4", time=NOW)) == [Outcome.ACCEPTED]
    voided = runtime.catalog.void_entitlement(ent.id, NOW, reason="refund", actor="cli")
    assert (voided.status, voided.terminated_at) == (Status.TERMINATED, NOW)
    later = NOW + timedelta(minutes=1)
    after = event(event_id="after", quantity="1", time=later)
    assert ingest(runtime, after, now=later) == [Outcome.NO_ENTITLEMENT]
    runtime.flush.flush_all(later)
    assert [p.consumed for p in runtime.usage.periods_of(ent.id)] == [Decimal(4)]
    assert steps(runtime, ent)[-1] == ("ACTIVE", "TERMINATED", "voided: refund")
    assert NotificationType.STATUS_CHANGED.value in notified(runtime, ent)


def test_a_late_event_timed_before_a_void_still_counts(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100")
    runtime.catalog.void_entitlement(ent.id, NOW, reason="contract cancelled")
    later = NOW + timedelta(hours=2)
    late = event(event_id="late", quantity="3", time=NOW - timedelta(minutes=30))
    too_late = event(event_id="after", quantity="3", time=NOW + timedelta(minutes=30))
    assert ingest(runtime, late, too_late, now=later) == [
        Outcome.ACCEPTED,
        Outcome.NO_ENTITLEMENT,
    ]
    runtime.flush.flush_all(later)
    assert [p.consumed for p in runtime.usage.periods_of(ent.id)] == [Decimal(3)]
    assert_log_matches_periods(runtime)


def test_a_void_ahead_takes_usage_until_its_instant_and_the_job_records_it_then(
    runtime: Runtime,
) -> None:
    ent = grant(runtime, quantity="100")
    scheduled = runtime.catalog.void_entitlement(ent.id, NOW, at=AHEAD, reason="plan ends")
    assert (scheduled.status, scheduled.terminated_at) == (Status.ACTIVE, AHEAD)
    assert steps(runtime, ent)[-1][2].startswith("void scheduled from")
    assert NotificationType.VOID_SCHEDULED.value in notified(runtime, ent)
    before = event(event_id="before", quantity="2", time=AHEAD - timedelta(minutes=1))
    assert ingest(runtime, before, now=AHEAD - timedelta(minutes=1)) == [Outcome.ACCEPTED]
    # the job before the instant: nothing due; at it: TERMINATED, stamped at the instant
    assert runtime.lifecycle.advance(AHEAD - timedelta(seconds=1)).transitions == 0
    assert runtime.lifecycle.advance(AHEAD + timedelta(minutes=1)).transitions == 1
    (last,) = runtime.queries.history("acme", ent.id)[-1:]
    assert (str(last.to_status), last.at) == ("TERMINATED", AHEAD)
    after = event(event_id="after", quantity="2", time=AHEAD + timedelta(seconds=1))
    assert ingest(runtime, after, now=AHEAD + timedelta(minutes=1)) == [Outcome.NO_ENTITLEMENT]


def test_a_void_ahead_is_judged_by_ingest_before_the_job_runs(runtime: Runtime) -> None:
    """State is a function of time: an event timed past the void is refused whether or
    not the lifecycle job has recorded it."""
    ent = grant(runtime, quantity="100")
    runtime.catalog.void_entitlement(ent.id, NOW, at=AHEAD)
    later = AHEAD + timedelta(minutes=5)
    after = event(event_id="after", quantity="1", time=AHEAD + timedelta(minutes=1))
    assert ingest(runtime, after, now=later) == [Outcome.NO_ENTITLEMENT]
    assert str(runtime.queries.history("acme", ent.id)[-1].to_status) == "ACTIVE"


def test_a_void_retried_with_its_instant_changes_nothing(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100")
    first = runtime.catalog.void_entitlement(ent.id, NOW, at=AHEAD, reason="x")
    again = runtime.catalog.void_entitlement(ent.id, NOW, at=AHEAD, reason="x")
    assert again.row_version == first.row_version
    with pytest.raises(ConflictError, match="void or terminated from"):
        runtime.catalog.void_entitlement(ent.id, NOW, at=AHEAD + timedelta(minutes=1))


def test_a_void_of_a_stale_row_version_is_refused(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100")
    with pytest.raises(ConflictError):
        runtime.catalog.void_entitlement(ent.id, NOW, expected_version=ent.row_version + 7)


def test_a_void_in_the_past_is_refused(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100")
    with pytest.raises(InvalidError, match="past"):
        runtime.catalog.void_entitlement(ent.id, NOW, at=NOW - timedelta(hours=1))


def test_a_void_racing_ingest_and_reserve_keeps_every_unit_timed_before_it(
    runtime: Runtime,
) -> None:
    ent = grant(runtime, quantity="1000")
    errors: list[BaseException] = []

    def send(worker: int) -> None:
        try:
            for i in range(20):
                ingest(runtime, event(event_id=f"w{worker}-{i}", quantity="1", time=NOW))
                runtime.reserve.reserve(
                    Reservation("acme", "cust-1", "api_calls", Decimal(1), f"r{worker}-{i}"), NOW
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    runtime.catalog.void_entitlement(ent.id, NOW, at=AHEAD, reason="race")
    for t in threads:
        t.join()
    assert errors == []
    assert consumed(runtime) == Decimal(120)  # 3 workers x 20 x (1 event + 1 reserve)
    late = AHEAD + timedelta(minutes=1)
    refused = runtime.reserve.reserve(
        Reservation("acme", "cust-1", "api_calls", Decimal(1), "after"), late
    )
    assert not refused.granted
    runtime.flush.flush_all(late)
    assert_log_matches_periods(runtime)


# -- reset ------------------------------------------------------------------------------


def test_a_reset_opens_a_fresh_allowance_and_keeps_the_old_period(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="10")
    assert ingest(runtime, event(event_id="a", quantity="9", time=NOW)) == [Outcome.ACCEPTED]
    at = NOW + timedelta(minutes=1)
    runtime.catalog.reset_entitlement(ent.id, at, reason="plan change")
    later = NOW + timedelta(minutes=2)
    assert consumed(runtime, later) == Decimal(0)
    granted = runtime.reserve.reserve(
        Reservation("acme", "cust-1", "api_calls", Decimal(10), "fresh"), later
    )
    assert granted.granted
    # a late event timed before the reset lands in the old period
    late = event(event_id="late", quantity="1", time=NOW - timedelta(minutes=5))
    assert ingest(runtime, late, now=later) == [Outcome.ACCEPTED]
    runtime.flush.flush_all(later)
    periods = [(p.period_start, p.consumed) for p in runtime.usage.periods_of(ent.id)]
    assert periods == [(ent.starts_at, Decimal(10)), (at, Decimal(10))]
    assert steps(runtime, ent)[-1][2] == f"reset at {isoformat(at)}: plan change"
    assert NotificationType.RESET.value in notified(runtime, ent)
    assert_log_matches_periods(runtime)


def test_a_reset_retried_at_its_instant_changes_nothing(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="10")
    first = runtime.catalog.reset_entitlement(ent.id, NOW, at=AHEAD)
    again = runtime.catalog.reset_entitlement(ent.id, NOW, at=AHEAD)
    assert again.row_version == first.row_version
    assert len(runtime.usage.periods_of(ent.id)) == 2


def test_a_pay_per_use_grant_has_no_reset(runtime: Runtime) -> None:
    ent = grant(runtime, quantity=None, billing_type=BillingType.PAY_PER_USE)
    with pytest.raises(InvalidError, match="PAY_PER_USE"):
        runtime.catalog.reset_entitlement(ent.id, NOW)


def test_a_reset_past_the_current_period_is_refused(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="10", ends_at=NOW + timedelta(hours=1))
    with pytest.raises(ConflictError, match="no period"):
        runtime.catalog.reset_entitlement(ent.id, NOW, at=NOW + timedelta(days=3))
