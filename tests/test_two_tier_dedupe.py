"""Two-tier dedupe (issue 12): compact markers in Redis for the hot window, the event
log and the events waiting for a flush beyond it. The invariant: an accepted event is
always found by its marker, among the waiting events, or in the log; so nothing counts
twice for the whole late window, and a digest collision never drops an event."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterd.core.domain import Outcome
from meterd.core.errors import UnavailableError
from meterd.core.event_parsing import parse_event
from meterd.core.events import UsageEvent
from meterd.runtime import STORE_ERRORS, Runtime
from meterd.services.counting import BackpressureError
from meterd.services.reserve import Reservation, ReservationConflictError, ReserveOutcome
from meterd.storage.counters import CounterStore, ScriptCode
from meterd.storage.database import make_engine, make_session_factory
from meterd.storage.event_log import EventLog
from meterd.testing import event

from .conftest import NOW
from .helpers import consumed, grant

HOT = timedelta(hours=24)
DAY = timedelta(days=1)


def outcomes(rt: Runtime, *events: dict, now=NOW) -> list[Outcome]:  # type: ignore[no-untyped-def]
    return rt.ingest.ingest(list(events), now=now).outcomes


def total(rt: Runtime) -> Decimal:
    return sum(consumed(rt, now=NOW + 30 * DAY).values(), Decimal(0))


def use_counters(rt: Runtime, **options: object) -> CounterStore:
    """Replace the runtime's counter store before anything uses it."""
    defaults: dict[str, object] = {
        "hot_window": HOT,
        "late_window": rt.late_window,
        "future_skew": timedelta(seconds=rt.settings.future_skew),
    }
    store = CounterStore(rt.redis, rt.redis_keys, **{**defaults, **options})  # type: ignore[arg-type]
    rt.__dict__["counters"] = store
    return store


@pytest.fixture
def unlimited(runtime: Runtime) -> Runtime:
    grant(runtime, quantity=None, starts_at=NOW - 60 * DAY, ends_at=None)
    return runtime


def test_a_redelivery_after_the_hot_window_is_found_among_the_waiting_events(
    unlimited: Runtime,
) -> None:
    assert outcomes(unlimited, event(event_id="x", time=NOW)) == [Outcome.ACCEPTED]
    later = NOW + 2 * DAY  # the flush has not run: the database is down, say
    assert outcomes(unlimited, event(event_id="x", time=NOW), now=later) == [Outcome.DUPLICATE]
    assert total(unlimited) == 1


def test_a_redelivery_after_the_hot_window_and_the_flush_is_found_in_the_log(
    unlimited: Runtime,
) -> None:
    outcomes(unlimited, event(event_id="x", time=NOW))
    unlimited.flush.flush_all(NOW)
    later = NOW + 10 * DAY
    assert outcomes(unlimited, event(event_id="x", time=NOW), now=later) == [Outcome.DUPLICATE]
    assert total(unlimited) == 1


def test_the_same_id_from_another_source_after_the_hot_window_is_a_new_event(
    unlimited: Runtime,
) -> None:
    outcomes(unlimited, event(event_id="x", time=NOW, source="a"))
    unlimited.flush.flush_all(NOW)
    later = NOW + 10 * DAY
    redelivered = [event(event_id="x", time=NOW, source=s) for s in ("a", "b")]
    assert outcomes(unlimited, *redelivered, now=later) == [Outcome.DUPLICATE, Outcome.ACCEPTED]
    assert total(unlimited) == 2


def test_a_duplicate_found_in_the_log_is_counted_in_the_stats_once(unlimited: Runtime) -> None:
    """The script counts the outcomes it decides; one the log search decides is
    reported for the task to record (``decided_before_counting``)."""
    outcomes(unlimited, event(event_id="x", time=NOW))
    unlimited.flush.flush_all(NOW)
    report = unlimited.ingest.ingest([event(event_id="x", time=NOW)], now=NOW + 10 * DAY)
    assert report.outcomes == [Outcome.DUPLICATE]
    unlimited.stats.record_ingest(report.decided_before_counting, 1, 0.0)  # as the task does
    assert unlimited.stats.events() == {"accepted": 1, "duplicate": 1}


def test_a_flush_stalled_longer_than_the_hot_window_counts_nothing_twice(
    unlimited: Runtime,
) -> None:
    sent = [event(event_id=f"e{i}", time=NOW - i * timedelta(minutes=1)) for i in range(50)]
    assert set(outcomes(unlimited, *sent)) == {Outcome.ACCEPTED}
    for days in (1, 2, 3):  # redelivered every day, never flushed
        again = outcomes(unlimited, *sent, now=NOW + days * DAY + timedelta(hours=1))
        assert set(again) == {Outcome.DUPLICATE}
    unlimited.flush.flush_all(NOW + 3 * DAY)
    assert set(outcomes(unlimited, *sent, now=NOW + 4 * DAY)) == {Outcome.DUPLICATE}
    assert total(unlimited) == 50
    assert sum(unlimited.event_log.sums_by_period().values()) == 50


def test_a_digest_collision_never_drops_an_event(unlimited: Runtime) -> None:
    # 3-bit digests: 8 values for 300 events, so nearly every new event hits a marker.
    use_counters(unlimited, marker_bits=3)
    sent = [event(event_id=f"c{i}", quantity="0.5") for i in range(300)]
    assert set(outcomes(unlimited, *sent[:150])) == {Outcome.ACCEPTED}
    unlimited.flush.flush_all(NOW)
    assert set(outcomes(unlimited, *sent[150:])) == {Outcome.ACCEPTED}
    assert set(outcomes(unlimited, *sent)) == {Outcome.DUPLICATE}
    assert total(unlimited) == 150


def test_markers_of_generations_past_the_hot_window_are_deleted(unlimited: Runtime) -> None:
    store = use_counters(unlimited, marker_generations=4)
    outcomes(unlimited, *[event(event_id=f"o{i}") for i in range(500)])
    before = store.marker_figures()
    assert before.markers == 500 and before.sets > 1
    # Past the hot window, the next calls delete the old generation a bounded number
    # of sets at a time; the new one holds only the new markers.
    for i in range(10):
        outcomes(unlimited, event(event_id=f"n{i}", time=NOW + 2 * DAY), now=NOW + 2 * DAY)
    after = store.marker_figures()
    assert (after.generations, after.markers) == (1, 10)


def test_backpressure_refuses_a_batch_while_too_many_events_wait_for_a_flush(
    unlimited: Runtime,
) -> None:
    use_counters(unlimited, max_waiting_events=3)
    outcomes(unlimited, *[event(event_id=f"w{i}") for i in range(3)])
    with pytest.raises(BackpressureError):
        outcomes(unlimited, event(event_id="w3"))
    unlimited.flush.flush_all(NOW)
    assert outcomes(unlimited, event(event_id="w3")) == [Outcome.ACCEPTED]
    assert total(unlimited) == 4


def test_a_confirmed_count_after_a_flush_moved_events_is_told_to_search_again(
    unlimited: Runtime,
) -> None:
    store = unlimited.counters
    seq = store.flush_seq()
    outcomes(unlimited, event(event_id="a"))
    unlimited.flush.flush_all(NOW)  # begins and ends: the sequence moves twice
    late = parse_event(event(event_id="b", time=NOW - 3 * DAY), received_at=NOW)
    assert isinstance(late, UsageEvent)
    assert store.add_batch([late], now=NOW, confirmed_seq=seq) == [ScriptCode.RETRY]
    assert store.add_batch([late], now=NOW) == [ScriptCode.CONFIRM]


def test_an_old_event_with_the_database_down_is_retried_not_guessed(unlimited: Runtime) -> None:
    dead = make_session_factory(
        make_engine("postgresql://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    )
    unlimited.counting.log = EventLog(dead, "postgresql")
    with pytest.raises((UnavailableError, *STORE_ERRORS)):
        outcomes(unlimited, event(event_id="old", time=NOW - 3 * DAY))
    # A recent event needs no search: it is counted with the database down.
    assert outcomes(unlimited, event(event_id="new")) == [Outcome.ACCEPTED]


def test_a_reservation_key_reused_after_its_flush_is_judged_by_the_log(
    runtime: Runtime,
) -> None:
    grant(runtime, quantity="10", starts_at=NOW - 10 * DAY, ends_at=NOW + 20 * DAY)
    first = Reservation("acme", "cust-1", "api_calls", Decimal(1), "k-1")
    assert runtime.reserve.reserve(first, NOW) is ReserveOutcome.GRANTED
    runtime.flush.flush_all(NOW)
    # A reservation is timed when asked, so its key is remembered for the hot window
    # (like Stripe's idempotency keys, 24 h by default); its marker leads to the log.
    later = NOW + timedelta(hours=2)
    assert runtime.reserve.reserve(first, later) is ReserveOutcome.ALREADY_GRANTED
    other = Reservation("acme", "cust-1", "api_calls", Decimal(5), "k-1")
    with pytest.raises(ReservationConflictError):
        runtime.reserve.reserve(other, later)


def test_the_log_holds_each_part_of_an_event_split_across_grants(runtime: Runtime) -> None:
    small = grant(runtime, quantity="2", priority=0)
    big = grant(runtime, quantity="100", priority=1)
    outcomes(runtime, event(event_id="split", quantity="5"))
    runtime.flush.flush_all(NOW)
    sums = runtime.event_log.sums_by_period()
    assert {e: q for (e, _), q in sums.items()} == {small.id: 2, big.id: 3}
    rows = runtime.event_log.page(
        "acme", "cust-1", feature=None, start=NOW - DAY, end=NOW + DAY, after=None, limit=10
    )
    assert [(r.part, r.quantity, r.event_quantity) for r in rows] == [(0, 2, 5), (1, 3, 5)]
    assert rows[0].data == {"feature": "api_calls", "quantity": "5"}


@st.composite
def journeys(draw: st.DrawFn) -> list[tuple[str, object]]:
    steps: list[tuple[str, object]] = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["send", "send", "advance", "flush"]))
        if kind == "send":
            steps.append((kind, draw(st.lists(st.integers(0, 15), min_size=1, max_size=12))))
        elif kind == "advance":
            steps.append((kind, draw(st.integers(1, 24 * 12))))
        else:
            steps.append((kind, None))
    return steps


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=journeys(), bits=st.sampled_from([2, 52]))
def test_redeliveries_at_any_time_count_each_event_once(
    runtime: Runtime, steps: list[tuple[str, object]], bits: int
) -> None:
    """A model: an event (its time fixed, as a redelivery carries it) is accepted the
    first time it is seen inside the late window, a duplicate afterwards, late when
    older than the late window; clock jumps of up to 12 days cross the hot window and
    marker generations, flushes move events into the log, tiny digests collide."""
    # Each example is its own customer (and event ids), so examples sharing the
    # runtime never meet.
    use_counters(runtime, marker_bits=bits)
    customer = f"h-{uuid.uuid4().hex[:12]}"
    grant(runtime, customer, quantity=None, starts_at=NOW - 60 * DAY, ends_at=None)
    clock = NOW
    seen: set[int] = set()
    late = runtime.late_window
    times = {i: NOW - timedelta(hours=3 * i) for i in range(16)}
    for kind, value in steps:
        if kind == "advance":
            clock += timedelta(hours=value)  # type: ignore[arg-type]
        elif kind == "flush":
            runtime.flush.flush_all(clock)
        else:
            ids: list[int] = value  # type: ignore[assignment]
            sent = [
                event(event_id=f"{customer}-{i}", customer=customer, time=times[i], quantity="1")
                for i in ids
            ]
            got = outcomes(runtime, *sent, now=clock)
            expected = []
            for i in ids:
                if times[i] < clock - late:
                    expected.append(Outcome.LATE)
                elif i in seen:
                    expected.append(Outcome.DUPLICATE)
                else:
                    seen.add(i)
                    expected.append(Outcome.ACCEPTED)
            assert got == expected
    runtime.flush.flush_all(clock)
    counted = sum(consumed(runtime, customer, now=clock).values(), Decimal(0))
    assert counted == len(seen)
