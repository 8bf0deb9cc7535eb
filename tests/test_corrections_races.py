"""Corrections racing each other and the flush, and what they do to thresholds and
targets: each correction counts exactly once, whatever runs beside it."""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

from meterd.core.domain import Outcome
from meterd.core.errors import ConflictError
from meterd.runtime import Runtime
from meterd.testing import event

from .conftest import NOW
from .helpers import assert_log_matches_periods, consumed, grant
from .test_notifications import crossings

LATER = NOW + timedelta(minutes=5)


def ingest(rt: Runtime, *events: dict[str, Any]) -> None:
    assert rt.ingest.ingest(list(events), now=NOW).outcomes == [Outcome.ACCEPTED] * len(events)


def total(rt: Runtime) -> Decimal:
    return sum(consumed(rt, now=LATER).values(), Decimal(0))


def test_racing_amends_and_voids_leave_one_consistent_chain(runtime: Runtime) -> None:
    grant(runtime, quantity="100")
    ingest(runtime, event(event_id="e1", quantity="4", time=NOW), event(event_id="e2", time=NOW))

    def amend(q: int) -> None:
        data = {"feature": "api_calls", "quantity": str(q)}
        with contextlib.suppress(ConflictError):  # voided first
            runtime.corrections.amend(
                "acme", "tests", "e1", data, reason=f"to {q}", actor="cli", now=LATER
            )

    def void() -> None:
        with contextlib.suppress(ConflictError):  # voided by another
            runtime.corrections.void("acme", "tests", "e1", reason="v", actor="cli", now=LATER)

    threads = [threading.Thread(target=amend, args=(q,)) for q in (10, 20, 30)]
    threads += [threading.Thread(target=void) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runtime.flush.flush_all(LATER)
    assert_log_matches_periods(runtime)
    left = total(runtime) - 1  # e2
    assert left in (Decimal(0), Decimal(10), Decimal(20), Decimal(30))
    if left:  # not void yet: a void now takes back exactly what is left
        made = runtime.corrections.void("acme", "tests", "e1", reason="v", actor="cli", now=LATER)
        assert [p.quantity for p in made.parts] == [-left]
    runtime.flush.flush_all(LATER)
    assert total(runtime) == Decimal(1)
    assert_log_matches_periods(runtime)


def test_voids_racing_a_flushing_thread_take_back_once(runtime: Runtime) -> None:
    grant(runtime, quantity=None)
    ingest(runtime, *(event(event_id=f"e{i}", quantity="2", time=NOW) for i in range(30)))
    stop = threading.Event()

    def flushing() -> None:
        while not stop.is_set():
            runtime.flush.flush_all(LATER)

    flusher = threading.Thread(target=flushing)
    flusher.start()
    try:
        for i in range(0, 30, 2):
            runtime.corrections.void("acme", "tests", f"e{i}", reason="v", actor="cli", now=LATER)
    finally:
        stop.set()
        flusher.join()
    runtime.flush.flush_all(LATER)
    assert total(runtime) == Decimal(30)
    assert_log_matches_periods(runtime)


def test_a_crossing_stays_notified_after_a_void_and_is_not_sent_again(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="10")
    ingest(runtime, event(event_id="e1", quantity="9", time=NOW))
    runtime.flush.flush_all(NOW)
    assert crossings(runtime, ent.id) == [80]
    runtime.corrections.void("acme", "tests", "e1", reason="v", actor="cli", now=LATER)
    runtime.flush.flush_all(LATER)
    assert crossings(runtime, ent.id) == [80]  # nothing un-notified
    ingest(runtime, event(event_id="e2", quantity="8.5", time=NOW))
    runtime.flush.flush_all(LATER)
    assert crossings(runtime, ent.id) == [80]  # crossed again: not notified again


def test_an_amend_past_a_threshold_notifies_it(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="10")
    ingest(runtime, event(event_id="e1", quantity="1", time=NOW))
    runtime.corrections.amend(
        "acme", "tests", "e1", {"feature": "api_calls", "quantity": "10"},
        reason="r", actor="cli", now=LATER,
    )  # fmt: skip
    runtime.flush.flush_all(LATER)
    assert crossings(runtime, ent.id) == [80, 100]


def test_an_amend_may_name_another_entitlement(runtime: Runtime) -> None:
    first = grant(runtime, quantity="100", priority=1)
    second = grant(runtime, quantity="100", priority=2)
    ingest(runtime, event(event_id="e1", quantity="4", time=NOW))
    data = {"feature": "api_calls", "quantity": "4", "entitlement_id": str(second.id)}
    runtime.corrections.amend("acme", "tests", "e1", data, reason="r", actor="cli", now=LATER)
    assert consumed(runtime, now=LATER) == {str(first.id): Decimal(0), str(second.id): Decimal(4)}
    runtime.flush.flush_all(LATER)
    assert_log_matches_periods(runtime)
