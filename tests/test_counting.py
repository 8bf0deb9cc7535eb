"""Counting usage: dedupe, burn-down, periods and outcomes, over the test backend."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from meterd.core.domain import BillingType, EffectiveState, Outcome
from meterd.runtime import Runtime
from meterd.testing import event

from .conftest import NOW
from .helpers import consumed, grant


def ingest(rt: Runtime, *events: dict, now=NOW) -> list[Outcome]:  # type: ignore[no-untyped-def]
    return rt.ingest.ingest(list(events), now=now).outcomes


def test_accepted_event_adds_its_exact_quantity(runtime: Runtime) -> None:
    ent = grant(runtime)
    assert ingest(runtime, event(quantity="0.000001"), event(event_id="e2", quantity="2.5")) == [
        Outcome.ACCEPTED,
        Outcome.ACCEPTED,
    ]
    assert consumed(runtime) == {str(ent.id): Decimal("2.500001")}


def test_a_million_tenths_sum_exactly(runtime: Runtime) -> None:
    ent = grant(runtime, quantity=None)
    events = [event(event_id=f"e{i}", quantity="0.1") for i in range(2000)]
    runtime.ingest.ingest(events, now=NOW)
    assert consumed(runtime)[str(ent.id)] == Decimal("200.000000")


def test_same_source_and_id_counts_once_across_batches(runtime: Runtime) -> None:
    grant(runtime)
    assert ingest(runtime, event(event_id="x")) == [Outcome.ACCEPTED]
    assert ingest(runtime, event(event_id="x")) == [Outcome.DUPLICATE]
    assert list(consumed(runtime).values()) == [Decimal(1)]


def test_duplicate_inside_one_batch_counts_once(runtime: Runtime) -> None:
    grant(runtime)
    assert ingest(runtime, event(event_id="x"), event(event_id="x")) == [
        Outcome.ACCEPTED,
        Outcome.DUPLICATE,
    ]


def test_same_id_from_another_source_is_another_event(runtime: Runtime) -> None:
    grant(runtime)
    assert ingest(runtime, event(event_id="x", source="a"), event(event_id="x", source="b")) == [
        Outcome.ACCEPTED,
        Outcome.ACCEPTED,
    ]


def test_source_with_colons_cannot_collide_with_another_source_and_id(runtime: Runtime) -> None:
    grant(runtime)
    first = event(source="s:a", event_id="b")
    second = event(source="s", event_id="a:b")
    assert ingest(runtime, first, second) == [Outcome.ACCEPTED, Outcome.ACCEPTED]


def test_burns_down_the_entitlement_ending_soonest_first(runtime: Runtime) -> None:
    late = grant(runtime, quantity="10", ends_at=NOW + timedelta(days=30))
    soon = grant(runtime, quantity="10", ends_at=NOW + timedelta(days=5))
    ingest(runtime, event(quantity="4"))
    assert consumed(runtime) == {str(soon.id): Decimal(4), str(late.id): Decimal(0)}


def test_lower_priority_burns_first_whatever_the_end(runtime: Runtime) -> None:
    soon = grant(runtime, quantity="10", ends_at=NOW + timedelta(days=5), priority=1)
    late = grant(runtime, quantity="10", ends_at=NOW + timedelta(days=30), priority=0)
    ingest(runtime, event(quantity="4"))
    assert consumed(runtime) == {str(soon.id): Decimal(0), str(late.id): Decimal(4)}


def test_equal_priority_and_end_burns_the_oldest_first(runtime: Runtime) -> None:
    first = grant(runtime, quantity="10")
    second = grant(runtime, quantity="10")
    ingest(runtime, event(quantity="3"))
    assert consumed(runtime) == {str(first.id): Decimal(3), str(second.id): Decimal(0)}


def test_one_event_spills_over_into_the_next_entitlement(runtime: Runtime) -> None:
    soon = grant(runtime, quantity="10", ends_at=NOW + timedelta(days=5))
    late = grant(runtime, quantity="10", ends_at=NOW + timedelta(days=30))
    ingest(runtime, event(quantity="8"), event(event_id="e2", quantity="5"))
    assert consumed(runtime) == {str(soon.id): Decimal(10), str(late.id): Decimal(3)}


def test_usage_beyond_every_limit_is_overage_on_the_last(runtime: Runtime) -> None:
    soon = grant(runtime, quantity="10", ends_at=NOW + timedelta(days=5))
    late = grant(runtime, quantity="10", ends_at=NOW + timedelta(days=30))
    assert ingest(runtime, event(quantity="25")) == [Outcome.ACCEPTED]
    balances = {
        b.entitlement_id: b for b in runtime.balance.balances("acme", "cust-1", "api_calls", NOW)
    }
    assert balances[soon.id].consumed == Decimal(10)
    assert balances[late.id].consumed == Decimal(15)
    assert balances[late.id].overage == Decimal(5)
    assert balances[late.id].remaining == Decimal(0)
    assert balances[late.id].state is EffectiveState.EXHAUSTED


def test_unlimited_entitlement_takes_everything(runtime: Runtime) -> None:
    ent = grant(runtime, quantity=None)
    ingest(runtime, event(quantity="123456789.123456"))
    assert consumed(runtime) == {str(ent.id): Decimal("123456789.123456")}


def test_event_naming_an_entitlement_counts_only_there(runtime: Runtime) -> None:
    soon = grant(runtime, quantity="10", ends_at=NOW + timedelta(days=5))
    late = grant(runtime, quantity="10", ends_at=NOW + timedelta(days=30))
    ingest(runtime, event(quantity="2", entitlement_id=str(late.id)))
    assert consumed(runtime) == {str(soon.id): Decimal(0), str(late.id): Decimal(2)}


def test_customer_without_entitlement_is_dead_lettered(runtime: Runtime) -> None:
    grant(runtime, customer="someone-else")
    assert ingest(runtime, event(customer="nobody")) == [Outcome.NO_ENTITLEMENT]
    (letter,) = runtime.dead_letters.find()
    assert letter.reason == "no_entitlement"
    assert "nobody" in letter.detail


def test_event_before_the_entitlement_starts_has_no_entitlement(runtime: Runtime) -> None:
    grant(runtime, starts_at=NOW + timedelta(days=1))
    assert ingest(runtime, event(time=NOW)) == [Outcome.NO_ENTITLEMENT]


def test_event_at_the_end_instant_is_outside_the_term(runtime: Runtime) -> None:
    ends = NOW - timedelta(hours=1)
    grant(runtime, ends_at=ends)
    assert ingest(runtime, event(time=ends - timedelta(microseconds=1))) == [Outcome.ACCEPTED]
    assert ingest(runtime, event(event_id="e2", time=ends)) == [Outcome.NO_ENTITLEMENT]


def test_usage_in_grace_counts_on_the_last_period(runtime: Runtime) -> None:
    ends = NOW - timedelta(days=1)
    ent = grant(runtime, ends_at=ends, grace=timedelta(days=3))
    assert ingest(runtime, event(time=NOW)) == [Outcome.ACCEPTED]
    periods = runtime.usage.periods_of(ent.id)
    assert len(periods) == 1
    runtime.flush.flush_all(NOW)
    assert runtime.usage.periods_of(ent.id)[0].consumed == Decimal(1)


def test_suspended_entitlement_refuses_usage(runtime: Runtime) -> None:
    from meterd.core.lifecycle import OperatorAction

    ent = grant(runtime)
    runtime.catalog.change_status(ent.id, OperatorAction.SUSPEND, NOW - timedelta(minutes=1))
    assert ingest(runtime, event()) == [Outcome.SUSPENDED]


def test_event_older_than_the_late_window_is_late(runtime: Runtime) -> None:
    grant(runtime, starts_at=NOW - timedelta(days=100), ends_at=None)
    old = NOW - timedelta(seconds=runtime.settings.late_window + 1)
    assert ingest(runtime, event(time=old)) == [Outcome.LATE]
    assert runtime.dead_letters.find()[0].reason == "late"


def test_event_far_in_the_future_is_invalid(runtime: Runtime) -> None:
    grant(runtime)
    report = runtime.ingest.ingest([event(time=NOW + timedelta(hours=1))], now=NOW)
    assert report.outcomes == [Outcome.INVALID]
    assert "future" in (report.reasons[0] or "")


def test_pay_per_use_counts_per_calendar_month(runtime: Runtime) -> None:
    ent = grant(
        runtime,
        quantity="1000",
        billing_type=BillingType.PAY_PER_USE,
        starts_at=NOW - timedelta(days=60),
        ends_at=None,
    )
    october = NOW.replace(month=10, day=31, hour=23, minute=59, second=59)
    ingest(runtime, event(event_id="oct", time=october, quantity="7"))
    ingest(runtime, event(event_id="nov", time=NOW, quantity="5"))
    runtime.flush.flush_all(NOW)
    periods = runtime.usage.periods_of(ent.id)
    # September (the month of starts_at) opened with the entitlement; the flush opens
    # a month on its first usage if the lifecycle job has not opened it yet.
    assert [(p.period_start.month, p.consumed) for p in periods] == [
        (9, Decimal(0)),
        (10, Decimal(7)),
        (11, Decimal(5)),
    ]


def test_late_event_after_a_month_change_lands_in_the_old_month(runtime: Runtime) -> None:
    ent = grant(
        runtime,
        billing_type=BillingType.PAY_PER_USE,
        starts_at=NOW - timedelta(days=60),
        ends_at=None,
    )
    runtime.lifecycle.advance(NOW)  # opens October and November
    ingest(runtime, event(event_id="nov", time=NOW))
    runtime.flush.flush_all(NOW)
    late = NOW.replace(month=10, day=25)
    assert ingest(runtime, event(event_id="late-oct", time=late, quantity="3")) == [
        Outcome.ACCEPTED
    ]
    runtime.flush.flush_all(NOW)
    periods = runtime.usage.periods_of(ent.id)
    assert [(p.period_start.month, p.consumed) for p in periods] == [
        (9, Decimal(0)),
        (10, Decimal(3)),
        (11, Decimal(1)),
    ]


def test_late_event_after_a_renewal_lands_in_the_old_period(runtime: Runtime) -> None:
    old_end = NOW - timedelta(days=1)
    ent = grant(runtime, quantity="10", starts_at=NOW - timedelta(days=31), ends_at=old_end)
    runtime.catalog.open_period(ent.id, old_end, old_end + timedelta(days=30), Decimal(20), NOW)
    ingest(runtime, event(event_id="new", time=NOW, quantity="4"))
    assert ingest(runtime, event(event_id="old", time=old_end - timedelta(hours=2))) == [
        Outcome.ACCEPTED
    ]
    runtime.flush.flush_all(NOW)
    periods = runtime.usage.periods_of(ent.id)
    assert [(p.quantity, p.consumed) for p in periods] == [
        (Decimal(10), Decimal(1)),
        (Decimal(20), Decimal(4)),
    ]


def test_new_entitlement_is_seen_at_once_after_no_entitlement(runtime: Runtime) -> None:
    assert ingest(runtime, event(event_id="a")) == [Outcome.NO_ENTITLEMENT]
    grant(runtime)
    assert ingest(runtime, event(event_id="b")) == [Outcome.ACCEPTED]


def test_resolution_data_is_loaded_after_it_expired(runtime: Runtime) -> None:
    ent = grant(runtime)
    ingest(runtime, event(event_id="a", quantity="2"))
    runtime.flush.flush_all(NOW)
    runtime.redis.delete(runtime.redis_keys.resolution("acme", "cust-1", "api_calls"))
    assert ingest(runtime, event(event_id="b", quantity="3")) == [Outcome.ACCEPTED]
    assert consumed(runtime) == {str(ent.id): Decimal(5)}


def test_lost_redis_totals_are_reseeded_from_the_database(runtime: Runtime) -> None:
    soon = grant(runtime, quantity="10", ends_at=NOW + timedelta(days=5))
    late = grant(runtime, quantity="10", ends_at=NOW + timedelta(days=30))
    ingest(runtime, event(event_id="a", quantity="8"))
    runtime.flush.flush_all(NOW)
    # Redis restarted without persistence: every key is gone, the database has 8.
    for key in runtime.redis.scan_iter(match=runtime.redis_keys.all_pattern):
        runtime.redis.delete(key)
    ingest(runtime, event(event_id="b", quantity="5"))
    assert consumed(runtime) == {str(soon.id): Decimal(10), str(late.id): Decimal(3)}


def test_other_orgs_usage_never_mixes(runtime: Runtime) -> None:
    runtime.catalog.create_org("other", "Other", NOW)
    runtime.catalog.create_feature("other", "api_calls", now=NOW)
    mine = grant(runtime)
    grant(runtime, org="other")
    ingest(runtime, event(org="other", quantity="9"))
    assert consumed(runtime) == {str(mine.id): Decimal(0)}
