"""Issue 22: backfill of level features into closed periods.

A MAX period's figure is the largest share any sample gave it, and a level only
rises: a backfilled sample moves a closed period's figure to max(figure, its
share), exact whatever history the log no longer holds. Its share is the level
shared down the candidates like a sum (``core/burn_down.level_share``), and its
log part is what it moved, so the log still sums to the figure. LATEST and
UNIQUE_COUNT figures need what a closed period no longer keeps (its latest
sample, the values it counted): their history is refused there, with that reason,
and counted through the live path while the period is open.
"""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from meterd.core.domain import Aggregation, Outcome
from meterd.core.meters import item_id
from meterd.core.terms import Term, TermUnit
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.storage import backfill as backfill_storage
from meterd.storage.models import BackfillLogRow, EventLogRow, UsagePeriod
from meterd.testing import event

from .conftest import NOW
from .helpers import grant

MONTHLY = Term.of(1, TermUnit.MONTH)
START = datetime(2025, 9, 1, tzinfo=NOW.tzinfo)
#: A closed period's sample: May 2026 (the late window ends mid-October).
MAY = datetime(2026, 5, 10, 12, tzinfo=NOW.tzinfo)
MAY_START = datetime(2026, 5, 1, tzinfo=NOW.tzinfo)


@pytest.fixture
def rt(runtime: Runtime) -> Runtime:
    runtime.catalog.create_feature("acme", "peak", now=NOW, aggregation=Aggregation.MAX)
    return runtime


def monthly(
    rt: Runtime,
    quantity: str | None,
    priority: int,
    customer: str = "cust-1",
    created: datetime = NOW,
    **extra: Any,
) -> Any:
    """A renewing monthly grant of ``peak`` from START (renewed with its own quantity),
    created at ``created``: at NOW (a migration), no live event could reach its
    periods that ended before mid-October; at START, every one was open once."""
    return rt.catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id=customer, feature=extra.pop("feature", "peak"),
            quantity=None if quantity is None else Decimal(quantity),
            renewal_quantity=None if quantity is None else Decimal(quantity),
            starts_at=START, auto_renew=True, term=MONTHLY, priority=priority, **extra,
        ),
        created,
    )  # fmt: skip


def sample(value: str, event_id: str, t: datetime = MAY, customer: str = "cust-1") -> Any:
    return event(customer, value, feature="peak", event_id=event_id, time=t)


def backfill(
    rt: Runtime, events: list[Any], batch: int = 50, now: datetime = NOW
) -> tuple[Counter[str], list[str | None]]:
    backfill_id = rt.backfill.open("acme", "cli:test", "cli", now)
    counts: Counter[str] = Counter()
    reasons: list[str | None] = []
    for no, start in enumerate(range(0, len(events), batch)):
        report = rt.backfill.backfill(
            events[start : start + batch], org="acme", backfill_id=backfill_id, batch_no=no, now=now
        )
        counts.update(report.counts)
        reasons += report.reasons
    return counts, reasons


def figures(rt: Runtime, ent: Any) -> dict[datetime, Decimal]:
    """The stored figure of each period of ``ent`` that has one."""
    with rt.database.sessions() as s:
        rows = s.execute(
            select(UsagePeriod.period_start, UsagePeriod.consumed).where(
                UsagePeriod.entitlement_id == ent.id
            )
        ).all()
    return {start: Decimal(c) for start, c in rows if c}


def parts_of(rt: Runtime, event_id: str) -> list[tuple[Any, Decimal]]:
    with rt.database.sessions() as s:
        rows = s.execute(
            select(BackfillLogRow.entitlement_id, BackfillLogRow.quantity)
            .where(BackfillLogRow.event_id == event_id)
            .order_by(BackfillLogRow.part)
        ).all()
    return [(e, Decimal(q)) for e, q in rows]


def assert_logs_match_periods(rt: Runtime) -> None:
    """``helpers.assert_log_matches_periods`` over both logs: the event log's parts
    and the backfill's own (those it counted in SQL) sum to every period's figure."""
    logged: dict[tuple[Any, datetime], Decimal] = {}
    with rt.database.sessions() as s:
        rows = list(
            s.execute(
                select(EventLogRow.entitlement_id, EventLogRow.period_start, EventLogRow.quantity)
            )
        ) + list(
            s.execute(
                select(
                    BackfillLogRow.entitlement_id,
                    BackfillLogRow.period_start,
                    BackfillLogRow.quantity,
                ).where(BackfillLogRow.counted_live.is_(False))
            )
        )
        periods = {
            (e, p): Decimal(c)
            for e, p, c in s.execute(
                select(UsagePeriod.entitlement_id, UsagePeriod.period_start, UsagePeriod.consumed)
            )
            if c
        }
    for e, p, q in rows:
        logged[(e, p)] = logged.get((e, p), Decimal(0)) + Decimal(q)
    assert {k: v for k, v in logged.items() if v} == periods


# -- MAX ------------------------------------------------------------------------------


def test_a_sample_above_the_stored_figure_raises_it_and_one_below_moves_nothing(
    rt: Runtime,
) -> None:
    """The period's figure came from live ingest at the time (its events are past
    the log's retention by now): a backfilled sample above it raises it, by the
    difference; one below is accepted and moves nothing (logged with 0)."""
    ent = monthly(rt, None, priority=0)
    rt.ingest.ingest([sample("30", "live-1")], now=MAY + timedelta(hours=1))
    rt.flush.flush_all(MAY + timedelta(hours=1))
    rt.event_log.maintain(NOW, retention=timedelta(days=36))  # its log is gone
    assert figures(rt, ent) == {MAY_START: Decimal(30)}

    assert backfill(rt, [sample("50", "old-1", MAY - timedelta(days=3))])[0] == {"accepted": 1}
    assert figures(rt, ent) == {MAY_START: Decimal(50)}
    assert parts_of(rt, "old-1") == [(ent.id, Decimal(20))]

    assert backfill(rt, [sample("45", "old-2", MAY + timedelta(days=3))])[0] == {"accepted": 1}
    assert figures(rt, ent) == {MAY_START: Decimal(50)}
    assert parts_of(rt, "old-2") == [(ent.id, Decimal(0))]


def test_samples_of_one_batch_keep_a_running_figure(rt: Runtime) -> None:
    ent = monthly(rt, None, priority=0)
    batch = [sample(v, f"s{i}", MAY + timedelta(hours=i)) for i, v in enumerate(["30", "50", "40"])]
    assert backfill(rt, batch)[0] == {"accepted": 3}
    assert figures(rt, ent) == {MAY_START: Decimal(50)}
    assert [parts_of(rt, f"s{i}") for i in range(3)] == [
        [(ent.id, Decimal(30))],
        [(ent.id, Decimal(20))],
        [(ent.id, Decimal(0))],
    ]
    assert_logs_match_periods(rt)


def test_a_level_is_shared_down_two_grants_as_a_sum(rt: Runtime) -> None:
    """First grant 100 (priority 0), second unlimited: 60 is the first's alone; 150
    gives the first 100 and the second 50; 120 (100 + 20) raises neither."""
    first = monthly(rt, "100", priority=0)
    second = monthly(rt, None, priority=1)
    assert backfill(rt, [sample("60", "a")])[0] == {"accepted": 1}
    assert (figures(rt, first), figures(rt, second)) == ({MAY_START: Decimal(60)}, {})
    assert backfill(rt, [sample("150", "b"), sample("120", "c")])[0] == {"accepted": 2}
    assert figures(rt, first) == {MAY_START: Decimal(100)}
    assert figures(rt, second) == {MAY_START: Decimal(50)}
    assert parts_of(rt, "b") == [(first.id, Decimal(40)), (second.id, Decimal(50))]
    assert parts_of(rt, "c") == [(first.id, Decimal(0))]
    assert_logs_match_periods(rt)


def test_a_scaled_feature_shares_its_level_in_its_own_units(runtime: Runtime) -> None:
    runtime.catalog.create_feature(
        "acme", "gpu", now=NOW, aggregation=Aggregation.MAX, scale=2
    )  # fmt: skip
    first = monthly(runtime, "1.25", priority=0, feature="gpu")
    second = monthly(runtime, "2", priority=1, feature="gpu")
    e = event("cust-1", "3.5", feature="gpu", event_id="g", time=MAY)
    assert backfill(runtime, [e])[0] == {"accepted": 1}
    assert figures(runtime, first) == {MAY_START: Decimal("1.25")}
    assert figures(runtime, second) == {MAY_START: Decimal("2.25")}  # the last takes the rest


def test_duplicates_are_dropped_in_a_file_and_across_imports(rt: Runtime) -> None:
    ent = monthly(rt, None, priority=0)
    first = [sample("40", "d1"), sample("70", "d1"), sample("10", "d2")]
    assert backfill(rt, first)[0] == {"accepted": 2, "duplicate": 1}
    assert figures(rt, ent) == {MAY_START: Decimal(40)}
    # the same identities again, with other values: nothing moves
    again = [sample("90", "d1"), sample("95", "d2")]
    assert backfill(rt, again)[0] == {"duplicate": 2}
    later = NOW + timedelta(days=7)
    rt.event_log.maintain(later, retention=timedelta(days=36))
    assert backfill(rt, again, now=later)[0] == {"duplicate": 2}
    assert figures(rt, ent) == {MAY_START: Decimal(40)}
    assert_logs_match_periods(rt)


def test_backfilled_history_ends_with_the_figures_live_ingest_gave(rt: Runtime) -> None:
    """Three grants for two customers: one's samples counted live as they happened,
    the other's backfilled a year later, in batches and shuffled. Every period of
    every grant ends with the same figure (a function of the samples and grants,
    never of their order), and both logs sum to the figures."""
    grants = {
        customer: (
            monthly(rt, "40", priority=0, customer=customer),
            monthly(rt, "25", priority=1, customer=customer),
            monthly(rt, None, priority=2, customer=customer),
        )
        for customer in ("live", "backfilled")
    }
    rng = random.Random(22)
    times = sorted(START + timedelta(minutes=rng.randrange(0, 330 * 24 * 60)) for _ in range(120))
    values = [str(rng.choice([1, 12, 30, 41, 66, 90, 130])) for _ in times]
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        report = rt.ingest.ingest([sample(v, f"l{i}", t, "live")], now=t + timedelta(hours=1))
        assert report.outcomes == [Outcome.ACCEPTED]
    rt.flush.flush_all(NOW)
    history = [
        sample(v, f"b{i}", t, "backfilled")
        for i, (t, v) in enumerate(zip(times, values, strict=True))
    ]
    rng.shuffle(history)
    assert backfill(rt, history, batch=25)[0] == {"accepted": len(history)}
    for live, backfilled in zip(grants["live"], grants["backfilled"], strict=True):
        assert figures(rt, backfilled) == figures(rt, live)
    assert_logs_match_periods(rt)


def test_a_figure_changed_under_the_plan_makes_the_batch_plan_again(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figure is raised on condition that it is still the one read: a stale read
    (as a writer that skipped the row lock would leave it) is not written over; the
    batch is planned again on the figure as it is."""
    ent = monthly(rt, None, priority=0)
    april, june = MAY - timedelta(days=30), MAY + timedelta(days=30)
    first = [sample("50", "first"), sample("5", "april", april), sample("5", "june", june)]
    assert backfill(rt, first)[0] == {"accepted": 3}
    real = backfill_storage._read_locked
    stale = {"rounds": 0}

    def read_once_stale(s: Any, keys: Any) -> Any:
        """The first round reads May's figure as 10, the other two as they are (so
        one statement of three rows matches two: the count, not the last row's)."""
        used = real(s, keys)
        stale["rounds"] += 1
        if stale["rounds"] == 1:
            return {k: Decimal(10) if k[1] == MAY_START else v for k, v in used.items()}
        return used

    monkeypatch.setattr(backfill_storage, "_read_locked", read_once_stale)
    second = [sample("70", "second"), sample("9", "april-2", april), sample("8", "june-2", june)]
    assert backfill(rt, second)[0] == {"accepted": 3}
    assert stale["rounds"] == 2
    assert figures(rt, ent) == {
        datetime(2026, 4, 1, tzinfo=NOW.tzinfo): Decimal(9),
        MAY_START: Decimal(70),
        datetime(2026, 6, 1, tzinfo=NOW.tzinfo): Decimal(8),
    }
    assert parts_of(rt, "second") == [(ent.id, Decimal(20))]
    assert_logs_match_periods(rt)


def test_imports_racing_on_one_period_raise_it_once(rt: Runtime) -> None:
    """Four imports of one file at once (threads; PostgreSQL with the real backend):
    every sample counts once and the figures are the serial ones."""
    first = monthly(rt, "40", priority=0)
    second = monthly(rt, None, priority=1)
    rng = random.Random(7)
    samples = [
        sample(str(rng.randrange(1, 200)), f"r{i}", START + timedelta(days=rng.randrange(0, 300)))
        for i in range(200)
    ]

    def one_import(_: int) -> Counter[str]:
        return backfill(rt, samples, batch=20)[0]

    with ThreadPoolExecutor(4) as pool:
        totals = sum(pool.map(one_import, range(4)), Counter())
    assert totals == {"accepted": len(samples), "duplicate": 3 * len(samples)}
    want_first: dict[datetime, Decimal] = {}
    want_second: dict[datetime, Decimal] = {}
    for e in samples:
        t = datetime.fromisoformat(e["time"])
        start = datetime(t.year, t.month, 1, tzinfo=t.tzinfo)
        value = Decimal(e["data"]["quantity"])
        want_first[start] = max(want_first.get(start, Decimal(0)), min(value, Decimal(40)))
        if value > 40:
            want_second[start] = max(want_second.get(start, Decimal(0)), value - 40)
    assert figures(rt, first) == want_first
    assert figures(rt, second) == want_second
    assert_logs_match_periods(rt)


# -- LATEST and UNIQUE_COUNT ----------------------------------------------------------


def seats(rt: Runtime) -> None:
    rt.catalog.create_feature("acme", "seats", now=NOW, aggregation=Aggregation.LATEST)


def users(rt: Runtime) -> None:
    rt.catalog.create_feature(
        "acme", "users", now=NOW, aggregation=Aggregation.UNIQUE_COUNT,
        event_type="llm.request", value_property="user",
    )  # fmt: skip


def seat_sample(value: str, event_id: str, t: datetime, customer: str = "cust-1") -> Any:
    return event(customer, value, feature="seats", event_id=event_id, time=t)


def user_event(user: str, event_id: str, t: datetime = MAY, customer: str = "cust-1") -> Any:
    return {
        "specversion": "1.0", "type": "llm.request", "source": "tests", "id": event_id,
        "org": "acme", "subject": customer, "time": t.isoformat(), "data": {"user": user},
    }  # fmt: skip


def test_latest_history_of_a_migrated_grant_takes_the_latest_sample_whatever_the_order(
    runtime: Runtime,
) -> None:
    """A grant created now, dated a year back: live ingest never reached its closed
    periods, so the backfill alone counts them, from the latest sample it keeps of
    each. A later batch with an older sample moves nothing; a newer one moves the
    figure down as well as up; the log sums to it."""
    seats(runtime)
    ent = monthly(runtime, None, priority=0, feature="seats")
    batches = [
        [seat_sample("8", "s-10", MAY), seat_sample("3", "s-05", MAY - timedelta(days=5))],
        [seat_sample("9", "s-07", MAY - timedelta(days=3))],  # older than s-10: nothing
        [seat_sample("4", "s-12", MAY + timedelta(days=2))],  # newer, lower: down to 4
    ]
    for batch in batches:
        assert backfill(runtime, batch)[0] == {"accepted": len(batch)}
    assert figures(runtime, ent) == {MAY_START: Decimal(4)}
    assert parts_of(runtime, "s-07") == [(ent.id, Decimal(0))]
    assert parts_of(runtime, "s-12") == [(ent.id, Decimal(-4))]
    assert_logs_match_periods(runtime)


def test_latest_history_of_migrated_grants_ends_with_the_figures_live_ingest_gave(
    runtime: Runtime,
) -> None:
    """The same three grants for two customers: one's created at their start, its
    samples counted live as they happened; the other's created now (a migration),
    its history backfilled shuffled, in batches. Every period ends with the same
    figure, each grant's share of its latest sample."""
    seats(runtime)
    grants = {
        customer: tuple(
            monthly(runtime, q, priority=p, customer=customer, created=created, feature="seats")
            for p, q in enumerate(["40", "25", None])
        )
        for customer, created in (("live", START), ("backfilled", NOW))
    }
    rng = random.Random(23)
    times = sorted(START + timedelta(minutes=rng.randrange(0, 300 * 24 * 60)) for _ in range(120))
    values = [str(rng.choice([1, 12, 30, 41, 66, 90, 130])) for _ in times]
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        report = runtime.ingest.ingest(
            [seat_sample(v, f"l{i}", t, "live")], now=t + timedelta(hours=1)
        )
        assert report.outcomes == [Outcome.ACCEPTED]
    runtime.flush.flush_all(NOW)
    history = [
        seat_sample(v, f"b{i}", t, "backfilled")
        for i, (t, v) in enumerate(zip(times, values, strict=True))
    ]
    rng.shuffle(history)
    assert backfill(runtime, history, batch=25)[0] == {"accepted": len(history)}
    for live, backfilled in zip(grants["live"], grants["backfilled"], strict=True):
        assert figures(runtime, backfilled) == figures(runtime, live)
    assert_logs_match_periods(runtime)


def test_unique_count_history_of_migrated_grants_counts_each_value_once_a_period(
    runtime: Runtime,
) -> None:
    """Values repeated across batches and months, burnt down two grants (3, then
    unlimited): each month's figures are its distinct values shared down them, and a
    value held by either grant's period counts nothing again."""
    users(runtime)
    first = monthly(runtime, "3", priority=0, feature="users")
    second = monthly(runtime, None, priority=1, feature="users")
    rng = random.Random(5)
    history = [
        user_event(rng.choice("abcdefg"), f"u{i}", START + timedelta(days=rng.randrange(0, 240)))
        for i in range(150)
    ] + [user_event("zed", "z", MAY)]
    distinct: dict[datetime, set[str]] = {}
    for e in history:
        t = datetime.fromisoformat(e["time"])
        distinct.setdefault(datetime(t.year, t.month, 1, tzinfo=t.tzinfo), set()).add(
            e["data"]["user"]
        )
    assert backfill(runtime, history, batch=20)[0] == {"accepted": len(history)}
    assert backfill(runtime, [user_event("zed", "again", MAY + timedelta(days=1))])[0] == {
        "accepted": 1
    }
    assert parts_of(runtime, item_id("again", "users")) == [(first.id, Decimal(0))]
    assert figures(runtime, first) == {m: Decimal(min(len(v), 3)) for m, v in distinct.items()}
    assert figures(runtime, second) == {
        m: Decimal(len(v) - 3) for m, v in distinct.items() if len(v) > 3
    }
    assert_logs_match_periods(runtime)


def test_latest_samples_at_one_instant_are_ordered_by_event_key_as_the_script_does(
    runtime: Runtime,
) -> None:
    """Two samples at the same time: the greater event key is the later, whichever
    batch brings it first."""
    seats(runtime)
    ent = monthly(runtime, None, priority=0, feature="seats")
    assert backfill(runtime, [seat_sample("7", "k-b", MAY)])[0] == {"accepted": 1}
    assert backfill(runtime, [seat_sample("3", "k-a", MAY)])[0] == {"accepted": 1}
    assert figures(runtime, ent) == {MAY_START: Decimal(7)}  # "...:k-a" < "...:k-b"
    assert backfill(runtime, [seat_sample("5", "k-c", MAY)])[0] == {"accepted": 1}
    assert figures(runtime, ent) == {MAY_START: Decimal(5)}
    assert_logs_match_periods(runtime)


def test_a_migrated_period_is_counted_in_sql_whatever_the_flush_lag(runtime: Runtime) -> None:
    """The flush stalled 20 days: a closed period that ended since may hold unflushed
    live usage, so a sum goes through the live path. A migrated grant's period never
    held any (no live event reached it): its LATEST history is counted from the
    backfill's records, not in Redis (which holds no latest sample of it)."""
    seats(runtime)
    ent = monthly(runtime, None, priority=0, feature="seats")
    grant(runtime, starts_at=NOW - timedelta(days=30))  # api_calls, live
    stalled = NOW - timedelta(days=20)
    live = runtime.ingest.ingest([event(quantity="1", event_id="w", time=stalled)], now=stalled)
    assert live.outcomes == [Outcome.ACCEPTED]  # and never flushed
    september = datetime(2026, 9, 15, tzinfo=NOW.tzinfo)
    backfill_id = runtime.backfill.open("acme", "cli:test", "cli", NOW)
    report = runtime.backfill.backfill(
        [seat_sample("6", "sep", september)],
        org="acme", backfill_id=backfill_id, batch_no=0, now=NOW,
    )  # fmt: skip
    assert (report.outcomes, report.live) == ([Outcome.ACCEPTED], 0)
    assert figures(runtime, ent) == {datetime(2026, 9, 1, tzinfo=NOW.tzinfo): Decimal(6)}


def test_a_sample_in_a_migrated_period_and_one_live_ingest_could_reach_is_refused(
    runtime: Runtime,
) -> None:
    seats(runtime)
    monthly(runtime, "10", priority=0, feature="seats")  # created now
    monthly(runtime, None, priority=1, feature="seats", created=START)
    counts, reasons = backfill(runtime, [seat_sample("30", "both", MAY)])
    assert counts == {"invalid": 1}
    assert "falls both in a period only the backfill counts" in (reasons[0] or "")


# -- LATEST and UNIQUE_COUNT: refused in a period live ingest once reached ---------------


def test_latest_history_is_refused_in_a_closed_period_and_counted_in_an_open_one(
    runtime: Runtime,
) -> None:
    seats(runtime)
    ent = monthly(runtime, None, priority=0, feature="seats", created=START)
    old = event("cust-1", "8", feature="seats", event_id="old", time=MAY)
    recent = event("cust-1", "5", feature="seats", event_id="recent", time=NOW - timedelta(days=3))
    counts, reasons = backfill(runtime, [old, recent])
    assert counts == {"invalid": 1, "accepted": 1}
    assert reasons[0] is not None
    assert "aggregates by LATEST" in reasons[0]
    assert "latest sample it took" in reasons[0]
    assert "is not kept once the period closed" in reasons[0]
    runtime.flush.flush_all(NOW)
    assert figures(runtime, ent) == {datetime(2026, 11, 1, tzinfo=NOW.tzinfo): Decimal(5)}


def test_unique_count_history_is_refused_in_a_closed_period_with_the_reason(
    runtime: Runtime,
) -> None:
    users(runtime)
    monthly(runtime, None, priority=0, feature="users", created=START)
    counts, reasons = backfill(runtime, [user_event("ann", "u-1")])
    assert counts == {"invalid": 1}
    assert reasons[0] is not None
    assert "aggregates by UNIQUE_COUNT" in reasons[0]
    assert "values it counted are not kept once the period closed" in reasons[0]
    assert "ended before its grant was created less the late window" in reasons[0]
