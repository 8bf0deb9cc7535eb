"""Issue 22, item 3: backfill of history older than the late window.

A year of events into renewing monthly grants lands in the period containing
each event's time, by the live burn-down rules (priority, then overage on the
last), including terms the lifecycle summarised (no period rows: the backfill
opens them with the term's quantity); duplicates count once, also a week later
after the log's retention ran; live ingest is untouched.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from meterd.core.domain import Outcome
from meterd.core.lifecycle import OperatorAction, period_at
from meterd.core.terms import Term, TermUnit
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.storage.models import Backfill, BackfillLogRow, DeadLetter, Entitlement, UsagePeriod
from meterd.testing import event

from .conftest import NOW

MONTHLY = Term.of(1, TermUnit.MONTH)
START = datetime(2025, 9, 1, tzinfo=NOW.tzinfo)


def renewing(rt: Runtime, quantity: str, renewal: str, priority: int, **extra: Any) -> Entitlement:
    created = extra.pop("now", NOW)
    return rt.catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id=extra.pop("customer", "cust-1"), feature="api_calls",
            quantity=Decimal(quantity), renewal_quantity=Decimal(renewal), starts_at=START,
            auto_renew=True, term=MONTHLY, priority=priority, **extra,
        ),
        created,
    )  # fmt: skip


def year_of_events(prefix: str = "h") -> list[dict[str, Any]]:
    """Three events a day, every 5th day, from the grants' start to 40 days ago."""
    events = []
    t, n = START + timedelta(hours=1), 0
    while t < NOW - timedelta(days=40):
        for q in ("7", "11.5", "3"):
            events.append(event(quantity=q, event_id=f"{prefix}-{n}", time=t))
            n += 1
        t += timedelta(days=5)
    return events


def consumed(rt: Runtime, ent: Entitlement) -> dict[datetime, tuple[Decimal, Decimal | None]]:
    with rt.database.sessions() as s:
        rows = s.execute(
            select(UsagePeriod.period_start, UsagePeriod.consumed, UsagePeriod.quantity).where(
                UsagePeriod.entitlement_id == ent.id
            )
        ).all()
    return {start: (Decimal(c), q) for start, c, q in rows}


def expected(rt: Runtime, first: Entitlement, second: Entitlement, events: list[dict[str, Any]]):
    """The burn-down by hand: per term, the first grant takes up to its term's
    quantity (100 for the first term, 50 renewed), the second the rest."""
    view = rt.backfill.store.views([("acme", "cust-1", "api_calls")])[
        ("acme", "cust-1", "api_calls")
    ]
    first_view = next(v for v in view if v.id == first.id)
    totals: dict[datetime, Decimal] = {}
    for e in events:
        t = datetime.fromisoformat(e["time"])
        start = period_at(first_view, t).start  # type: ignore[union-attr]
        totals[start] = totals.get(start, Decimal(0)) + Decimal(e["data"]["quantity"])
    want_first, want_second = {}, {}
    for start, total in totals.items():
        limit = Decimal(100) if start == START else Decimal(50)
        want_first[start] = min(total, limit)
        want_second[start] = total - want_first[start]
    return want_first, want_second


def run(
    rt: Runtime,
    events: list[dict[str, Any]],
    now: datetime = NOW,
    batch: int = 50,
    flush: bool = True,
) -> Counter:
    backfill_id = rt.backfill.open("acme", "cli:test", "cli", now)
    total: Counter = Counter()
    for no, start in enumerate(range(0, len(events), batch)):
        report = rt.backfill.backfill(
            events[start : start + batch], org="acme", backfill_id=backfill_id, batch_no=no, now=now
        )
        total.update(report.counts)
    if flush:  # a term still open took its events through the live path
        rt.flush.flush_all(now)
    return total


def test_a_year_of_history_lands_in_each_monthly_term_exactly(runtime: Runtime) -> None:
    first = renewing(runtime, "100", "50", priority=0)
    second = renewing(runtime, "1000", "1000", priority=1)
    events = year_of_events()
    counts = run(runtime, events)
    assert counts == {"accepted": len(events)}
    want_first, want_second = expected(runtime, first, second, events)
    got_first, got_second = consumed(runtime, first), consumed(runtime, second)
    for start, amount in want_first.items():
        assert got_first[start][0] == amount, start
        assert got_second[start][0] == want_second[start], start
    # summarised terms got their period rows, with the term's own quantity
    assert got_first[START][1] == Decimal(100)
    assert all(q == Decimal(50) for s, (_, q) in got_first.items() if s != START)
    assert sum(c for c, _ in got_first.values()) + sum(c for c, _ in got_second.values()) == sum(
        Decimal(e["data"]["quantity"]) for e in events
    )


def test_importing_the_same_file_twice_counts_once_also_a_week_later(runtime: Runtime) -> None:
    first = renewing(runtime, "100", "50", priority=0)
    events = year_of_events()
    run(runtime, events)
    before = consumed(runtime, first)
    assert run(runtime, events) == {"duplicate": len(events)}
    later = NOW + timedelta(days=7)
    runtime.event_log.maintain(later, retention=timedelta(days=36))
    assert run(runtime, events, now=later) == {"duplicate": len(events)}
    assert consumed(runtime, first) == before


def test_duplicates_inside_one_file_count_once(runtime: Runtime) -> None:
    first = renewing(runtime, "100", "50", priority=0)
    t = NOW - timedelta(days=200)
    events = [event(quantity="5", event_id="same", time=t)] * 3
    assert run(runtime, events) == {"accepted": 1, "duplicate": 2}
    assert sum(c for c, _ in consumed(runtime, first).values()) == Decimal(5)


def test_a_batch_applied_twice_counts_once(runtime: Runtime) -> None:
    first = renewing(runtime, "100", "50", priority=0)
    backfill_id = runtime.backfill.open("acme", "cli:test", "cli", NOW)
    batch = [
        event(quantity="5", event_id=f"e{i}", time=NOW - timedelta(days=100)) for i in range(4)
    ]
    for _ in range(2):
        report = runtime.backfill.backfill(
            batch, org="acme", backfill_id=backfill_id, batch_no=0, now=NOW
        )
    assert report.applied_before
    assert sum(c for c, _ in consumed(runtime, first).values()) == Decimal(20)
    with runtime.database.sessions() as s:
        audit = s.get(Backfill, backfill_id)
        assert audit is not None
        assert (audit.events, audit.accepted, audit.duplicates) == (4, 4, 0)


def test_the_backfill_is_audited_and_its_events_marked_in_its_log(runtime: Runtime) -> None:
    renewing(runtime, "100", "50", priority=0)
    events = [
        event(quantity="1", event_id=f"a{i}", time=NOW - timedelta(days=90)) for i in range(3)
    ]
    events.append(event(customer="nobody", event_id="x", time=NOW - timedelta(days=90)))
    backfill_id = runtime.backfill.open("acme", "key:k1", "api", NOW)
    runtime.backfill.backfill(events, org="acme", backfill_id=backfill_id, batch_no=0, now=NOW)
    with runtime.database.sessions() as s:
        audit = s.get(Backfill, backfill_id)
        assert audit is not None
        assert (audit.actor, audit.via, audit.events, audit.accepted, audit.dead_lettered) == (
            "key:k1", "api", 4, 3, 1,
        )  # fmt: skip
        logged = s.scalar(select(func.count()).where(BackfillLogRow.backfill_id == backfill_id))
        assert logged == 3
        letter = s.scalars(select(DeadLetter).where(DeadLetter.event_id == "x")).one()
        assert letter.reason == Outcome.NO_ENTITLEMENT.value
        assert "backfill" in letter.detail


def test_a_suspended_term_refuses_its_history(runtime: Runtime) -> None:
    ent = renewing(runtime, "100", "50", priority=0, now=START)
    runtime.catalog.change_status(ent.id, OperatorAction.SUSPEND, NOW - timedelta(days=300))
    runtime.catalog.change_status(ent.id, OperatorAction.RESUME, NOW - timedelta(days=250))
    events = [
        event(quantity="2", event_id="in", time=NOW - timedelta(days=280)),
        event(quantity="2", event_id="out", time=NOW - timedelta(days=200)),
    ]
    assert run(runtime, events) == {"suspended": 1, "accepted": 1}


def test_an_old_event_in_a_period_still_open_moves_the_live_total(runtime: Runtime) -> None:
    """A yearly term that began 13 months... no: a term still open (ends inside the
    late window) holds its live total in Redis: the event goes through the live path,
    so the value read and the flushed figure both show it."""
    ent = runtime.catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id="cust-1", feature="api_calls", quantity=Decimal(100),
            starts_at=NOW - timedelta(days=60), ends_at=NOW + timedelta(days=60),
        ),
        NOW,
    )  # fmt: skip
    runtime.ingest.ingest([event(quantity="4", event_id="live-1", time=NOW)], now=NOW)
    counts = run(runtime, [event(quantity="6", event_id="old-1", time=NOW - timedelta(days=50))])
    assert counts == {"accepted": 1}
    value = runtime.balance.value("acme", "cust-1", "api_calls", NOW)
    assert value.consumed == Decimal(10)
    runtime.flush.flush_all(NOW)
    assert consumed(runtime, ent)[NOW - timedelta(days=60)][0] == Decimal(10)
    # and it is deduplicated past the log's retention
    later = NOW + timedelta(days=120)
    runtime.event_log.maintain(later, retention=timedelta(days=36))
    assert run(runtime, [event(quantity="6", event_id="old-1", time=NOW - timedelta(days=50))],
               now=later) == {"duplicate": 1}  # fmt: skip


def test_live_ingest_is_unaffected_by_a_backfill(runtime: Runtime) -> None:
    ent = renewing(runtime, "100", "50", priority=0)
    runtime.ingest.ingest([event(quantity="3", event_id="now-1", time=NOW)], now=NOW)
    pending_before = runtime.counters.pending_fields()
    closed_terms_only = [
        e
        for e in year_of_events()
        if datetime.fromisoformat(e["time"]) < datetime(2026, 10, 1, tzinfo=NOW.tzinfo)
    ]
    run(runtime, closed_terms_only, flush=False)
    # the backfill wrote nothing to Redis for closed periods
    assert runtime.counters.pending_fields() == pending_before
    report = runtime.ingest.ingest([event(quantity="2", event_id="now-2", time=NOW)], now=NOW)
    assert report.outcomes == [Outcome.ACCEPTED]
    value = runtime.balance.value("acme", "cust-1", "api_calls", NOW)
    assert value.consumed == Decimal(5)
    runtime.flush.flush_all(NOW)
    current = period_at(
        runtime.backfill.store.views([("acme", "cust-1", "api_calls")])[
            ("acme", "cust-1", "api_calls")
        ][0],
        NOW,
    )
    assert current is not None
    assert consumed(runtime, ent)[current.start][0] == Decimal(5)


def test_an_event_of_another_org_is_invalid(runtime: Runtime) -> None:
    renewing(runtime, "100", "50", priority=0)
    assert run(runtime, [event(org="other", event_id="o", time=NOW - timedelta(days=90))]) == {
        "invalid": 1
    }


def test_unknown_backfill_id_is_not_needed_for_dedupe(runtime: Runtime) -> None:
    """Two backfills (two imports) of one event: the second finds the first's."""
    renewing(runtime, "100", "50", priority=0)
    e = [event(quantity="1", event_id="twice", time=NOW - timedelta(days=90))]
    assert run(runtime, e) == {"accepted": 1}
    assert run(runtime, e) == {"duplicate": 1}
    assert uuid.UUID(int=0) != uuid.uuid4()


@pytest.mark.parametrize("days", [10])
def test_a_recent_event_in_a_backfill_counts_through_the_live_path(
    runtime: Runtime, days: int
) -> None:
    renewing(runtime, "100", "50", priority=0)
    e = [event(quantity="1", event_id="recent", time=NOW - timedelta(days=days))]
    backfill_id = runtime.backfill.open("acme", "cli:test", "cli", NOW)
    report = runtime.backfill.backfill(e, org="acme", backfill_id=backfill_id, batch_no=0, now=NOW)
    assert report.outcomes == [Outcome.ACCEPTED]
    assert report.live == 1


def test_backfills_racing_with_the_same_events_count_each_once(runtime: Runtime) -> None:
    """Four imports of one file at once (threads; PostgreSQL with the real backend):
    the log's key makes a loser plan again, and the period rows' locks order the
    burn-down, so every event counts once and the split is the serial one."""
    from concurrent.futures import ThreadPoolExecutor

    first = renewing(runtime, "100", "50", priority=0)
    second = renewing(runtime, "1000", "1000", priority=1)
    events = year_of_events("race")

    def one_import(_: int) -> Counter[str]:
        return run(runtime, events, batch=40, flush=False)

    with ThreadPoolExecutor(4) as pool:
        totals = sum(pool.map(one_import, range(4)), Counter())
    runtime.flush.flush_all(NOW)
    assert totals == {"accepted": len(events), "duplicate": 3 * len(events)}
    want_first, want_second = expected(runtime, first, second, events)
    got_first, got_second = consumed(runtime, first), consumed(runtime, second)
    for start, amount in want_first.items():
        assert got_first[start][0] == amount, start
        assert got_second[start][0] == want_second[start], start


def test_backfilled_events_are_listed_with_the_logged_ones_in_time_order(
    runtime: Runtime,
) -> None:
    renewing(runtime, "100", "50", priority=0)
    old = [
        event(quantity="1", event_id=f"b{i}", time=NOW - timedelta(days=90 + i)) for i in range(3)
    ]
    run(runtime, old)
    runtime.ingest.ingest([event(quantity="2", event_id="live", time=NOW)], now=NOW)
    runtime.flush.flush_all(NOW)
    listed, cursor = [], None
    while True:
        page = runtime.usage_report.events(
            "acme", "cust-1", feature=None, start=NOW - timedelta(days=400),
            end=NOW + timedelta(days=1), cursor=cursor, limit=2,
        )  # fmt: skip
        listed += [e.id for e in page.events]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert listed == ["b2", "b1", "b0", "live"]


def test_the_hourly_retention_job_keeps_the_backfilled_rows(runtime: Runtime) -> None:
    renewing(runtime, "100", "50", priority=0)
    old = [
        event(quantity="1", event_id=f"k{i}", time=NOW - timedelta(days=200 + i)) for i in range(5)
    ]
    run(runtime, old)

    def kept() -> int:
        with runtime.database.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(BackfillLogRow)) or 0)

    assert kept() == 5
    for hours in (1, 2, 24 * 30):
        runtime.event_log_maintenance.maintain(NOW + timedelta(hours=hours))
    assert kept() == 5


def test_a_raw_event_of_last_year_feeds_the_meters_that_exist_now(runtime: Runtime) -> None:
    from meterd.core.domain import Aggregation

    runtime.catalog.create_feature(
        "acme", "input_tokens", now=NOW, scale=0, event_type="llm.request",
        value_property="usage.input_tokens",
    )  # fmt: skip
    runtime.catalog.create_feature(
        "acme", "peak", now=NOW, aggregation=Aggregation.MAX, event_type="llm.request",
        value_property="usage.input_tokens",
    )  # fmt: skip
    ent = runtime.catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id="cust-1", feature="input_tokens", quantity=None,
            starts_at=START, auto_renew=True, term=MONTHLY,
        ),
        NOW,
    )  # fmt: skip
    peak = runtime.catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id="cust-1", feature="peak", quantity=None,
            starts_at=START, auto_renew=True, term=MONTHLY,
        ),
        NOW,
    )  # fmt: skip
    raw = {
        "specversion": "1.0", "type": "llm.request", "source": "tests", "id": "raw-1",
        "org": "acme", "subject": "cust-1", "time": (NOW - timedelta(days=200)).isoformat(),
        "data": {"usage": {"input_tokens": 1200}},
    }  # fmt: skip
    backfill_id = runtime.backfill.open("acme", "cli:test", "cli", NOW)
    report = runtime.backfill.backfill(
        [raw], org="acme", backfill_id=backfill_id, batch_no=0, now=NOW
    )
    # both meters count it: the SUM one adds it, the MAX one raises its period to it
    assert report.outcomes == [Outcome.ACCEPTED]
    assert sum(c for c, _ in consumed(runtime, ent).values()) == Decimal(1200)
    assert sum(c for c, _ in consumed(runtime, peak).values()) == Decimal(1200)


def test_the_backfill_splits_history_as_live_ingest_did_at_the_time(runtime: Runtime) -> None:
    """The same grants for two customers: one's events counted live as they happened
    (each ingested an hour after its time), the other's backfilled a year later.
    Every period of every grant ends with the same consumption. (Each grant's
    renewal quantity is its quantity here: for a first term the lifecycle
    summarised, live ingest takes the renewal quantity where the backfill takes
    the grant's own; see the first test.)"""
    import random

    grants = {
        customer: (
            renewing(runtime, "100", "100", priority=0, customer=customer),
            renewing(runtime, "70", "70", priority=1, customer=customer),
            renewing(runtime, "1000", "1000", priority=2, customer=customer),
        )
        for customer in ("live", "backfilled")
    }
    rng = random.Random(22)
    times = sorted(START + timedelta(minutes=rng.randrange(0, 330 * 24 * 60)) for _ in range(150))
    quantities = [str(rng.choice([1, 3, 9, 17, 40])) for _ in times]
    for i, (t, q) in enumerate(zip(times, quantities, strict=True)):
        report = runtime.ingest.ingest(
            [event("live", q, event_id=f"l{i}", time=t)], now=t + timedelta(hours=1)
        )
        assert report.outcomes == [Outcome.ACCEPTED]
    runtime.flush.flush_all(NOW)
    history = [
        event("backfilled", q, event_id=f"b{i}", time=t)
        for i, (t, q) in enumerate(zip(times, quantities, strict=True))
    ]
    assert run(runtime, history, batch=25) == {"accepted": len(history)}
    for live, backfilled in zip(grants["live"], grants["backfilled"], strict=True):
        got = {s: c for s, (c, _) in consumed(runtime, backfilled).items() if c}
        want = {s: c for s, (c, _) in consumed(runtime, live).items() if c}
        assert got == want


def test_a_period_that_may_still_hold_unflushed_usage_goes_through_the_live_path(
    runtime: Runtime,
) -> None:
    """The flush stalled 20 days: a write that old is not in SQL, so a period that
    ended 52 days ago may hold unflushed units (the rule of the periods read): its
    history is counted in Redis, where those units are, not beside them in SQL."""
    ent = renewing(runtime, "100", "50", priority=0)
    stalled = NOW - timedelta(days=20)
    runtime.ingest.ingest([event(quantity="1", event_id="w", time=stalled)], now=stalled)
    september = datetime(2026, 9, 15, tzinfo=NOW.tzinfo)
    backfill_id = runtime.backfill.open("acme", "cli:test", "cli", NOW)
    report = runtime.backfill.backfill(
        [event(quantity="5", event_id="sep", time=september)],
        org="acme", backfill_id=backfill_id, batch_no=0, now=NOW,
    )  # fmt: skip
    assert (report.outcomes, report.live) == ([Outcome.ACCEPTED], 1)
    runtime.flush.flush_all(NOW)
    assert consumed(runtime, ent)[datetime(2026, 9, 1, tzinfo=NOW.tzinfo)][0] == Decimal(5)
    backfill_id = runtime.backfill.open("acme", "cli:test", "cli", NOW)
    report = runtime.backfill.backfill(
        [event(quantity="5", event_id="sep-2", time=september)],
        org="acme", backfill_id=backfill_id, batch_no=0, now=NOW,
    )  # fmt: skip
    assert (report.outcomes, report.live) == ([Outcome.ACCEPTED], 0)  # flushed: closed again
