"""Void and amend of MAX, LATEST and UNIQUE_COUNT events (issue 22): a level or a set
is not a sum, so the periods the event counts on are recounted from their events
without it (or with its new form), waiting or flushed, and every figure agrees."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterd.core.domain import Outcome
from meterd.core.errors import ConflictError, UnavailableError
from meterd.core.notifications import AlertKind
from meterd.core.terms import Term
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services import level_corrections
from meterd.services.alert_rules import AlertRuleSpec
from meterd.services.catalog import NewEntitlement

from . import helpers
from .helpers import assert_log_matches_periods

# Dated from the real clock: a UNIQUE_COUNT set expires at an absolute time that
# Redis compares with its own clock (tests/conftest.py, the year-ahead pass).
NOW = utcnow().replace(microsecond=0)
LATER = NOW + timedelta(minutes=5)


def grant(rt: Runtime, **kw: Any) -> Any:
    kw.setdefault("starts_at", NOW - timedelta(days=10))
    kw.setdefault("ends_at", NOW + timedelta(days=20))
    return helpers.grant(rt, now=NOW, **kw)


def feature(rt: Runtime, key: str, aggregation: str) -> None:
    columns: dict[str, Any] = {"scale": 0, "aggregation": aggregation}
    if aggregation == "UNIQUE_COUNT":
        columns["value_property"] = "user"
    rt.catalog.create_feature("acme", key, now=NOW - timedelta(days=30), **columns)


def sample(
    event_id: str,
    quantity: str = "1",
    *,
    feature: str = "seats",
    minutes: int = 0,
    user: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"feature": feature, "quantity": quantity}
    if user is not None:
        data["user"] = user
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "tests",
        "type": "meterd.usage",
        "subject": "cust-1",
        "org": "acme",
        "time": (NOW + timedelta(minutes=minutes)).isoformat(),
        "data": data,
    }


def ingest(rt: Runtime, *events: dict[str, Any]) -> None:
    assert rt.ingest.ingest(list(events), now=NOW).outcomes == [Outcome.ACCEPTED] * len(events)


def void(rt: Runtime, event_id: str, *, now: datetime = LATER) -> Any:
    return rt.corrections.void("acme", "tests", event_id, reason="wrong", actor="cli", now=now)


def amend(rt: Runtime, event_id: str, data: dict[str, Any], *, now: datetime = LATER) -> Any:
    return rt.corrections.amend("acme", "tests", event_id, data, reason="fix", actor="cli", now=now)


def live(rt: Runtime, key: str = "seats") -> list[Decimal]:
    return [b.consumed for b in rt.balance.current("acme", "cust-1", key, LATER)]


def agree(rt: Runtime, expected: list[str], key: str = "seats") -> None:
    """The live figures, then the flushed periods and the log, all as expected."""
    assert live(rt, key) == [Decimal(e) for e in expected]
    rt.flush.flush_all(LATER)
    assert [b.consumed for b in rt.balance.balances("acme", "cust-1", key, LATER)] == [
        Decimal(e) for e in expected
    ]
    assert live(rt, key) == [Decimal(e) for e in expected]
    assert_log_matches_periods(rt)


@pytest.fixture
def seats(runtime: Runtime) -> Runtime:
    feature(runtime, "seats", "MAX")
    grant(runtime, feature="seats", quantity="100")
    return runtime


@pytest.fixture
def gauge(runtime: Runtime) -> Runtime:
    feature(runtime, "seats", "LATEST")
    grant(runtime, feature="seats", quantity="100")
    return runtime


@pytest.fixture
def users(runtime: Runtime) -> Runtime:
    feature(runtime, "users", "UNIQUE_COUNT")
    grant(runtime, feature="users", quantity="100")
    return runtime


# -- MAX ------------------------------------------------------------------------------


@pytest.mark.parametrize("flushed", [False, True], ids=["waiting", "flushed"])
def test_a_void_of_the_max_sample_falls_back_to_the_next_largest(
    seats: Runtime, flushed: bool
) -> None:
    ingest(seats, sample("a", "7"), sample("b", "12", minutes=1), sample("c", "9", minutes=2))
    if flushed:
        seats.flush.flush_all(NOW)
    void(seats, "b")
    agree(seats, ["9"])


def test_a_void_of_a_sample_below_the_max_changes_nothing(seats: Runtime) -> None:
    ingest(seats, sample("a", "7"), sample("b", "12", minutes=1))
    correction = void(seats, "a")
    assert [p.quantity for p in correction.parts] == [Decimal(0)]
    agree(seats, ["12"])


def test_a_void_of_the_only_sample_leaves_zero(seats: Runtime) -> None:
    ingest(seats, sample("a", "7"))
    void(seats, "a")
    agree(seats, ["0"])


def test_an_amend_of_the_max_sample_recounts_the_level(seats: Runtime) -> None:
    ingest(seats, sample("a", "7"), sample("b", "12", minutes=1))
    amend(seats, "b", {"feature": "seats", "quantity": "3"})
    agree(seats, ["7"])
    amend(seats, "a", {"feature": "seats", "quantity": "20"})
    agree(seats, ["20"])


def test_a_second_void_of_a_max_sample_is_a_conflict(seats: Runtime) -> None:
    ingest(seats, sample("a", "7"), sample("b", "12", minutes=1))
    void(seats, "b")
    with pytest.raises(ConflictError, match="already void"):
        void(seats, "b")
    agree(seats, ["7"])


def test_voids_of_two_samples_one_flushed_between_them_recount_both(seats: Runtime) -> None:
    ingest(seats, sample("a", "7"), sample("b", "12", minutes=1), sample("c", "9", minutes=2))
    void(seats, "b")  # waits for the flush with its correction
    void(seats, "c")  # recounts without b (its waiting void) and without c
    agree(seats, ["7"])
    void(seats, "a")
    agree(seats, ["0"])


def test_a_void_of_a_split_max_sample_recounts_both_grants(runtime: Runtime) -> None:
    feature(runtime, "seats", "MAX")
    first = grant(runtime, feature="seats", quantity="10", priority=1)
    second = grant(runtime, feature="seats", quantity="100", priority=2)
    ingest(runtime, sample("a", "8"), sample("b", "25", minutes=1))
    assert live(runtime) == [Decimal(10), Decimal(15)]
    void(runtime, "b")
    figures = {
        b.entitlement_id: b.consumed
        for b in runtime.balance.current("acme", "cust-1", "seats", LATER)
    }
    assert figures == {first.id: Decimal(8), second.id: Decimal(0)}
    agree(runtime, ["8", "0"])


def test_a_void_in_a_closed_max_period_recounts_that_period(runtime: Runtime) -> None:
    feature(runtime, "seats", "MAX")
    ent = grant(runtime, feature="seats", quantity="100", ends_at=NOW + timedelta(hours=1))
    ingest(runtime, sample("a", "7"), sample("b", "12", minutes=1))
    runtime.flush.flush_all(NOW)
    after = NOW + timedelta(days=2)
    void(runtime, "b", now=after)
    runtime.flush.flush_all(after)
    assert [p.consumed for p in runtime.usage.periods_of(ent.id)] == [Decimal(7)]
    assert_log_matches_periods(runtime)


def test_a_period_older_than_the_log_horizon_is_not_recounted(runtime: Runtime) -> None:
    feature(runtime, "seats", "MAX")
    grant(runtime, feature="seats", quantity="100", ends_at=NOW + timedelta(hours=1))
    ingest(runtime, sample("a", "7"))
    runtime.flush.flush_all(NOW)
    with pytest.raises(ConflictError, match="horizon"):
        void(runtime, "a", now=NOW + timedelta(days=36))


def test_an_item_counted_after_the_recount_read_makes_it_read_again(seats: Runtime) -> None:
    """A sample counted between the recount's read and its write moves the period's
    version: the script refuses and the recount reads it too."""
    ingest(seats, sample("a", "7"), sample("b", "12", minutes=1))
    recounter = seats.corrections.levels
    real = recounter.plan
    calls = 0

    def plan_then_race(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        made = real(*args, **kwargs)
        if calls == 1:
            ingest(seats, sample("c", "10", minutes=2))
        return made

    recounter.plan = plan_then_race  # type: ignore[method-assign]
    void(seats, "b")
    assert calls == 2
    agree(seats, ["10"])


# -- LATEST ---------------------------------------------------------------------------


@pytest.mark.parametrize("flushed", [False, True], ids=["waiting", "flushed"])
def test_a_void_of_the_latest_sample_falls_back_to_the_one_before(
    gauge: Runtime, flushed: bool
) -> None:
    ingest(gauge, sample("a", "7"), sample("b", "3", minutes=2), sample("c", "12", minutes=1))
    if flushed:
        gauge.flush.flush_all(NOW)
    void(gauge, "b")
    agree(gauge, ["12"])


def test_a_sample_after_a_voided_latest_is_judged_against_the_one_before(
    gauge: Runtime,
) -> None:
    """The period's latest sample moves back with the void: a late sample between the
    two is now the latest."""
    ingest(gauge, sample("a", "7"), sample("b", "3", minutes=5))
    void(gauge, "b")
    ingest(gauge, sample("c", "9", minutes=2))
    agree(gauge, ["9"])


def test_an_amend_of_the_latest_sample_sets_its_new_level(gauge: Runtime) -> None:
    ingest(gauge, sample("a", "7"), sample("b", "3", minutes=5))
    amend(gauge, "b", {"feature": "seats", "quantity": "40"})
    agree(gauge, ["40"])
    amend(gauge, "a", {"feature": "seats", "quantity": "1"})  # not the latest
    agree(gauge, ["40"])


# -- UNIQUE_COUNT ---------------------------------------------------------------------


@pytest.mark.parametrize("flushed", [False, True], ids=["waiting", "flushed"])
def test_a_void_of_a_value_seen_once_takes_its_unit_back(users: Runtime, flushed: bool) -> None:
    ingest(
        users,
        sample("a", feature="users", user="ann"),
        sample("b", feature="users", user="bob", minutes=1),
    )
    if flushed:
        users.flush.flush_all(NOW)
    void(users, "a")
    agree(users, ["1"], key="users")


def test_a_void_of_a_value_another_event_carries_keeps_it_counted(users: Runtime) -> None:
    ingest(
        users,
        sample("a", feature="users", user="ann"),
        sample("b", feature="users", user="ann", minutes=1),
    )
    void(users, "a")
    agree(users, ["1"], key="users")
    void(users, "b")  # the last carrier
    agree(users, ["0"], key="users")


def test_a_value_voided_then_sent_again_counts_again(users: Runtime) -> None:
    ingest(users, sample("a", feature="users", user="ann"))
    void(users, "a")
    ingest(users, sample("c", feature="users", user="ann", minutes=3))
    agree(users, ["1"], key="users")


def test_an_amend_to_another_value_moves_the_count(users: Runtime) -> None:
    ingest(
        users,
        sample("a", feature="users", user="ann"),
        sample("b", feature="users", user="bob", minutes=1),
    )
    amend(users, "a", {"feature": "users", "quantity": "1", "user": "bob"})
    agree(users, ["1"], key="users")
    amend(users, "a", {"feature": "users", "quantity": "1", "user": "cy"})
    agree(users, ["2"], key="users")


def test_a_voided_value_carried_by_a_later_grant_moves_there(runtime: Runtime) -> None:
    """ann counted on the first grant; a second ann event in the same period counted
    nothing. Voiding the first leaves ann counted once, by the second event's rules."""
    feature(runtime, "users", "UNIQUE_COUNT")
    grant(runtime, feature="users", quantity="1", priority=1)
    grant(runtime, feature="users", quantity="100", priority=2)
    ingest(
        runtime,
        sample("a", feature="users", user="ann"),
        sample("b", feature="users", user="bob", minutes=1),
        sample("c", feature="users", user="ann", minutes=2),
    )
    assert live(runtime, "users") == [Decimal(1), Decimal(1)]
    void(runtime, "a")
    # bob was counted first on the room left: ann now counts where bob's left it
    assert sum(live(runtime, "users")) == Decimal(2)
    runtime.flush.flush_all(LATER)
    assert_log_matches_periods(runtime)


def test_the_carrier_that_counts_a_value_again_gets_a_recount_record(users: Runtime) -> None:
    ingest(
        users,
        sample("a", feature="users", user="ann"),
        sample("b", feature="users", user="ann", minutes=1),
    )
    void(users, "a")
    users.flush.flush_all(LATER)
    rows = users.corrections.log.rows("acme", "tests", ["b\x1e1"])["b\x1e1"]
    audit = rows[0].data["correction"]
    assert (audit["kind"], audit["actor"], [r.quantity for r in rows]) == (
        "recount",
        "cli",
        [Decimal(1)],
    )


# -- concurrency and bounds -------------------------------------------------------------


@pytest.mark.parametrize("flushed", [False, True], ids=["waiting", "flushed"])
def test_racing_voids_of_one_period_recount_each_other_out(
    seats: Runtime, monkeypatch: pytest.MonkeyPatch, flushed: bool
) -> None:
    """Four voids of one period at once, ten times over: each recount sees the others
    (or reads again), whatever lands between its log read, its versions and its scan
    (widened here by a random pause before each versions read)."""
    counters = seats.corrections.counters
    versions = counters.versions

    def slow_versions(*args: Any) -> Any:
        time.sleep(random.random() * 0.004)
        return versions(*args)

    monkeypatch.setattr(counters, "versions", slow_versions)
    levels = [7, 12, 9, 3, 15, 11]
    for round_ in range(10):
        customer = f"race-{round_}"
        grant(seats, customer=customer, feature="seats", quantity="100")
        samples = [sample(f"r{round_}-{i}", str(v), minutes=i) for i, v in enumerate(levels)]
        ingest(seats, *({**s, "subject": customer} for s in samples))
        if flushed:
            seats.flush.flush_all(NOW)
        errors: list[BaseException] = []

        def run(event_id: str, errors: list[BaseException]) -> None:
            try:
                void(seats, event_id)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=run, args=(f"r{round_}-{i}", errors)) for i in (1, 2, 4, 5)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        figures = [b.consumed for b in seats.balance.current("acme", customer, "seats", LATER)]
        assert figures == [Decimal(7)], f"round {round_}"  # 7 and 3 are left
    seats.flush.flush_all(LATER)
    assert_log_matches_periods(seats)


def test_no_flush_batch_begins_while_a_recount_reads(seats: Runtime) -> None:
    ingest(seats, sample("a", "7"))
    counters = seats.corrections.counters
    counters.pause_flush("reader", 30)
    assert seats.flush.flush_all(NOW) == []
    counters.resume_flush("someone else")  # another caller's token lifts nothing
    assert seats.flush.flush_all(NOW) == []
    counters.resume_flush("reader")
    assert len(seats.flush.flush_all(NOW)) == 1


def test_a_void_lifts_its_flush_pause_when_it_ends(seats: Runtime) -> None:
    ingest(seats, sample("a", "7"), sample("b", "12", minutes=1))
    void(seats, "b")
    assert seats.redis.exists(seats.redis_keys.flush_pause) == 0
    assert len(seats.flush.flush_all(LATER)) == 1


def test_a_recount_refuses_while_too_many_events_wait(
    seats: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(seats, sample("a", "7"), sample("b", "12", minutes=1))
    monkeypatch.setattr(level_corrections, "MAX_WAITING_SCAN", 1)
    with pytest.raises(UnavailableError, match="wait for a flush"):
        void(seats, "b")
    seats.flush.flush_all(NOW)
    void(seats, "b")  # nothing waits now
    agree(seats, ["7"])


def test_a_recount_of_more_events_than_it_reads_is_refused(
    seats: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(seats, *(sample(f"s{i}", str(i + 1), minutes=i) for i in range(4)))
    seats.flush.flush_all(NOW)
    monkeypatch.setattr(level_corrections, "MAX_RECOUNT_ITEMS", 3)
    with pytest.raises(ConflictError, match="too many to recount"):
        void(seats, "s3")
    agree(seats, ["4"])


def test_a_period_with_history_the_backfill_counted_in_sql_is_not_recounted(
    runtime: Runtime,
) -> None:
    """An hourly term closed past the late window, inside the log's horizon: the
    backfill counted a sample there in SQL (its own log only), so a recount of the
    event log would leave it out."""
    feature(runtime, "seats", "MAX")
    runtime.catalog.create_entitlement(
        NewEntitlement(
            org="acme",
            customer_id="cust-1",
            feature="seats",
            quantity=Decimal(100),
            renewal_quantity=Decimal(100),
            starts_at=NOW - timedelta(minutes=10),
            auto_renew=True,
            term=Term(length=timedelta(hours=1)),
        ),
        NOW,
    )
    ingest(runtime, sample("a", "7"))
    runtime.flush.flush_all(NOW)
    later = NOW + timedelta(days=35, hours=2)
    backfill_id = runtime.backfill.open("acme", "cli:test", "cli", later)
    report = runtime.backfill.backfill(
        [sample("old", "9", minutes=5)], org="acme", backfill_id=backfill_id, batch_no=0, now=later
    )
    assert report.counts["accepted"] == 1
    with pytest.raises(ConflictError, match="backfill"):
        void(runtime, "a", now=later)


def test_an_amend_raising_a_level_past_an_alert_rule_notifies_it(seats: Runtime) -> None:
    """A recount is judged on the entitlement's own alert rules, as ingest is."""
    rule = seats.alert_rules.create(
        AlertRuleSpec(org="acme", kind=AlertKind.CONSUMED, threshold="30"), NOW
    )
    ingest(seats, sample("a", "7"), sample("b", "12", minutes=1))
    amend(seats, "b", {"feature": "seats", "quantity": "40"})
    seats.flush.flush_all(LATER)
    (ent,) = seats.balance.current("acme", "cust-1", "seats", LATER)
    fired = [
        json.loads(n.payload)["data"]["rule"]["id"]
        for n in seats.notification_store.all_for(ent.entitlement_id)
        if n.type == "entitlement.threshold_crossed"
    ]
    assert fired == [rule.id]
