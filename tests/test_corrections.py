"""Void and amend (issue 22, CONTRACT 6a): a correction takes back exactly what an
event counted, from the periods it burned, once, whether the event waits in Redis
or is in the log, and every figure (periods, log, value read, usage) agrees."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from meterd.core.corrections import CorrectionKind
from meterd.core.domain import Outcome
from meterd.core.errors import ConflictError, InvalidError, NotFoundError
from meterd.runtime import Runtime
from meterd.services.usage_report import Window
from meterd.testing import event

from .conftest import NOW
from .helpers import assert_log_matches_periods, consumed, grant

LATER = NOW + timedelta(minutes=5)


def ingest(rt: Runtime, *events: dict[str, Any]) -> list[Outcome]:
    return rt.ingest.ingest(list(events), now=NOW).outcomes


def void(rt: Runtime, event_id: str = "e1", **kw: Any) -> Any:
    return rt.corrections.void(
        "acme",
        "tests",
        event_id,
        reason=kw.pop("reason", "test event"),
        actor="cli",
        now=kw.pop("now", LATER),
    )


def amend(rt: Runtime, quantity: str, event_id: str = "e1", **kw: Any) -> Any:
    data = {"feature": kw.pop("feature", "api_calls"), "quantity": quantity}
    return rt.corrections.amend(
        "acme",
        "tests",
        event_id,
        data,
        reason=kw.pop("reason", "wrong quantity"),
        actor="cli",
        now=kw.pop("now", LATER),
    )


def values(rt: Runtime) -> list[Decimal]:
    return list(consumed(rt, now=LATER).values())


def live(rt: Runtime) -> Decimal:
    return rt.balance.value("acme", "cust-1", "api_calls", LATER).consumed


def logged_usage(rt: Runtime) -> Decimal:
    rows = rt.usage_report.usage(
        "acme",
        customer="cust-1",
        feature="api_calls",
        start=NOW - timedelta(days=40),
        end=NOW + timedelta(days=1),
        window=Window.DAY,
        tz=ZoneInfo("UTC"),
    )
    return sum((r.quantity for r in rows), Decimal(0))


def agree(rt: Runtime, expected: str) -> None:
    """Every figure after a flush: periods, the log, the value read and /v1/usage."""
    rt.flush.flush_all(LATER)
    assert sum(values(rt)) == Decimal(expected)
    assert live(rt) == Decimal(expected)
    assert logged_usage(rt) == Decimal(expected)
    assert_log_matches_periods(rt)


@pytest.fixture
def counted(runtime: Runtime) -> Runtime:
    grant(runtime, quantity="100")
    assert (
        ingest(
            runtime,
            event(event_id="e1", quantity="4", time=NOW),
            event(event_id="e2", quantity="1", time=NOW),
        )
        == [Outcome.ACCEPTED] * 2
    )
    return runtime


def test_a_void_of_a_flushed_event_takes_its_units_back(counted: Runtime) -> None:
    counted.flush.flush_all(NOW)
    correction = void(counted)
    assert correction.kind is CorrectionKind.VOID
    assert [p.quantity for p in correction.parts] == [Decimal("-4")]
    assert live(counted) == Decimal(1)
    agree(counted, "1")


def test_a_void_of_an_event_not_yet_flushed_takes_its_units_back(counted: Runtime) -> None:
    void(counted)
    assert live(counted) == Decimal(1)
    assert counted.counters.pending_fields()  # the event and its void wait together
    agree(counted, "1")


def test_a_second_void_is_a_conflict_and_takes_nothing_more(counted: Runtime) -> None:
    void(counted)
    with pytest.raises(ConflictError):
        void(counted)
    counted.flush.flush_all(LATER)
    with pytest.raises(ConflictError):
        void(counted)
    agree(counted, "1")


def test_a_void_of_an_event_never_accepted_is_not_found(counted: Runtime) -> None:
    with pytest.raises(NotFoundError):
        void(counted, "nope")


def test_a_voided_event_redelivered_stays_a_duplicate(counted: Runtime) -> None:
    void(counted)
    counted.flush.flush_all(LATER)
    assert ingest(counted, event(event_id="e1", quantity="4", time=NOW)) == [Outcome.DUPLICATE]
    agree(counted, "1")


def test_an_amend_counts_the_new_quantity_at_the_original_time(counted: Runtime) -> None:
    counted.flush.flush_all(NOW)
    correction = amend(counted, "7.5")
    assert correction.kind is CorrectionKind.AMEND
    assert live(counted) == Decimal("8.5")
    agree(counted, "8.5")
    amend(counted, "2", reason="second look")
    agree(counted, "3")


def test_an_amend_retried_with_the_same_data_counts_once(counted: Runtime) -> None:
    first = amend(counted, "7")
    again = amend(counted, "7")
    assert again.numbers == first.numbers
    agree(counted, "8")


def test_an_amend_of_a_voided_event_is_a_conflict(counted: Runtime) -> None:
    void(counted)
    with pytest.raises(ConflictError):
        amend(counted, "3")


def test_a_void_after_an_amend_takes_back_the_amended_units(counted: Runtime) -> None:
    amend(counted, "9")
    counted.flush.flush_all(LATER)
    correction = void(counted)
    assert [p.quantity for p in correction.parts] == [Decimal("-9")]
    agree(counted, "1")


def test_an_amend_cannot_move_the_event_to_another_feature(counted: Runtime) -> None:
    with pytest.raises(InvalidError):
        amend(counted, "3", feature="storage")


def test_a_split_event_is_taken_back_from_both_grants(runtime: Runtime) -> None:
    first = grant(runtime, quantity="3", priority=1)
    second = grant(runtime, quantity="100", priority=2)
    assert ingest(runtime, event(event_id="e1", quantity="5", time=NOW)) == [Outcome.ACCEPTED]
    runtime.flush.flush_all(NOW)
    assert consumed(runtime, now=LATER) == {str(first.id): Decimal(3), str(second.id): Decimal(2)}
    correction = void(runtime)
    assert sorted(p.quantity for p in correction.parts) == [Decimal(-3), Decimal(-2)]
    assert consumed(runtime, now=LATER) == {str(first.id): Decimal(0), str(second.id): Decimal(0)}
    agree(runtime, "0")


def test_an_amend_burns_down_again_across_the_grants(runtime: Runtime) -> None:
    first = grant(runtime, quantity="3", priority=1)
    second = grant(runtime, quantity="100", priority=2)
    assert ingest(runtime, event(event_id="e1", quantity="2", time=NOW)) == [Outcome.ACCEPTED]
    amend(runtime, "10")
    assert consumed(runtime, now=LATER) == {str(first.id): Decimal(3), str(second.id): Decimal(7)}
    agree(runtime, "10")


def test_a_void_in_a_closed_period_takes_back_from_that_period(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100", ends_at=NOW + timedelta(hours=1))
    assert ingest(runtime, event(event_id="e1", quantity="4", time=NOW)) == [Outcome.ACCEPTED]
    runtime.flush.flush_all(NOW)
    after = NOW + timedelta(days=2)
    void(runtime, now=after)
    runtime.flush.flush_all(after)
    assert [p.consumed for p in runtime.usage.periods_of(ent.id)] == [Decimal(0)]
    assert_log_matches_periods(runtime)


def test_a_void_past_the_late_window_seeds_no_stale_total(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100", ends_at=NOW + timedelta(hours=1))
    assert ingest(runtime, event(event_id="e1", quantity="4", time=NOW)) == [Outcome.ACCEPTED]
    runtime.flush.flush_all(NOW)
    runtime.redis.delete(runtime.redis_keys.used("acme", "cust-1"))  # no total kept
    later = NOW + timedelta(days=36)
    void(runtime, now=later)
    runtime.flush.flush_all(later)
    assert [p.consumed for p in runtime.usage.periods_of(ent.id)] == [Decimal(0)]
    assert_log_matches_periods(runtime)


def test_racing_voids_take_back_once(counted: Runtime) -> None:
    counted.flush.flush_all(NOW)
    outcomes: list[str] = []

    def one() -> None:
        try:
            void(counted)
            outcomes.append("void")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["void"]
    agree(counted, "1")


def test_a_void_whose_event_a_flush_moves_under_it_takes_back_once(
    counted: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: the event is read waiting in Redis, then a flush moves it to the log
    before the script runs; the script sees the flush sequence moved and the void is
    read again, from the log."""
    store = counted.corrections.counters
    real = store.waiting
    flushed: list[int] = []

    def waiting_then_flush(*args: Any) -> Any:
        found = real(*args)
        if not flushed:
            flushed.append(1)
            counted.flush.flush_all(NOW)
        return found

    monkeypatch.setattr(store, "waiting", waiting_then_flush)
    void(counted)
    agree(counted, "1")


def test_the_log_keeps_the_event_and_its_audited_corrections(counted: Runtime) -> None:
    amend(counted, "6", reason="meter misread")
    void(counted, reason="test traffic")
    counted.flush.flush_all(LATER)
    page = counted.usage_report.events(
        "acme",
        "cust-1",
        feature=None,
        start=NOW - timedelta(hours=1),
        end=NOW + timedelta(hours=1),
        cursor=None,
        limit=100,
    )
    e1 = [e for e in page.events if e.id.startswith("e1")]
    assert [e.quantity for e in e1] == [Decimal(4), Decimal(2), Decimal(-6)]
    audits = [e.data["correction"] for e in e1[1:] if e.data]
    assert [(a["kind"], a["reason"], a["actor"]) for a in audits] == [
        ("amend", "meter misread", "cli"),
        ("void", "test traffic", "cli"),
    ]


def test_events_pages_walk_past_a_correction_row(counted: Runtime) -> None:
    """A page may end on a correction's row: its cursor (an id with U+001E) reads."""
    void(counted)
    counted.flush.flush_all(LATER)
    seen = []
    cursor = None
    while True:
        page = counted.usage_report.events(
            "acme",
            "cust-1",
            feature=None,
            start=NOW - timedelta(hours=1),
            end=NOW + timedelta(hours=1),
            cursor=cursor,
            limit=1,
        )
        seen += [(e.id, e.correction) for e in page.events]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [("e1", None), ("e1\x1e1", ("e1", 1)), ("e2", None)]


def test_corrections_stop_at_the_most_an_event_may_take_but_a_void(
    counted: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("meterd.services.corrections.MAX_CORRECTIONS", 3)
    monkeypatch.setattr("meterd.core.corrections.MAX_CORRECTIONS", 3)
    amend(counted, "5", reason="one")
    amend(counted, "6", reason="two")
    with pytest.raises(ConflictError, match="corrections"):
        amend(counted, "7", reason="three")
    void(counted)
    agree(counted, "1")
