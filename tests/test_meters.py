"""Meters over raw events, the five aggregations, dimensions and feature scales,
through the ingest service, the Lua script and the flush (the test backend)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterd.core.domain import BillingType, Outcome
from meterd.core.meters import matches
from meterd.core.timeutil import epoch_micros, utcnow
from meterd.runtime import Runtime
from meterd.services.catalog import EntitlementChange
from meterd.testing import event

from .conftest import NOW
from .helpers import assert_log_matches_periods, grant

#: When the features of these tests are created: before every event they send (a
#: meter counts raw events timed at or after its creation; tests/test_meter_start.py).
CREATED = NOW - timedelta(days=365)


def meter(rt: Runtime, key: str, **columns: Any) -> None:
    """A feature with its meter (the catalog's checks are tested at the API)."""
    rt.catalog.create_feature("acme", key, now=CREATED, **columns)


def grant_for(rt: Runtime, feature: str, quantity: str, filters: dict[str, Any]) -> Any:
    """A grant with dimension filters."""
    return grant(rt, feature=feature, quantity=quantity, filters=filters)


def raw(
    data: dict[str, Any],
    *,
    event_id: str = "req-1",
    customer: str = "cust-1",
    type_: str = "llm.request",
    time: datetime | None = None,
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "gateway",
        "type": type_,
        "subject": customer,
        "org": "acme",
        "time": (time or NOW).isoformat(),
        "data": data,
    }


def ingest(rt: Runtime, *events: dict[str, Any], now: datetime = NOW) -> list[Outcome]:
    return rt.ingest.ingest(list(events), now=now).outcomes


def consumed(
    rt: Runtime, feature: str, customer: str = "cust-1", *, now: datetime = NOW
) -> list[Decimal]:
    return [b.consumed for b in rt.balance.current("acme", customer, feature, now)]


def flushed(
    rt: Runtime, feature: str, customer: str = "cust-1", *, now: datetime = NOW
) -> list[Decimal]:
    rt.flush.flush_all(now)
    return [b.consumed for b in rt.balance.balances("acme", customer, feature, now)]


@pytest.fixture
def tokens(runtime: Runtime) -> Runtime:
    """input_tokens and output_tokens, SUM meters over llm.request events."""
    for key, path in (("input_tokens", "usage.input"), ("output_tokens", "usage.output")):
        meter(runtime, key, scale=0, event_type="llm.request", value_property=path)
        grant(runtime, feature=key, quantity="1000000")
    return runtime


def request(tokens_in: int, tokens_out: int, **kwargs: Any) -> dict[str, Any]:
    return raw({"model": "gpt-4o", "usage": {"input": tokens_in, "output": tokens_out}}, **kwargs)


# -- meters over raw events --------------------------------------------------------


def test_one_raw_event_feeds_every_feature_whose_meter_reads_its_type(tokens: Runtime) -> None:
    assert ingest(tokens, request(120, 30)) == [Outcome.ACCEPTED]
    assert consumed(tokens, "input_tokens") == [Decimal(120)]
    assert consumed(tokens, "output_tokens") == [Decimal(30)]


def test_a_redelivered_raw_event_counts_nothing_more(tokens: Runtime) -> None:
    ingest(tokens, request(120, 30))
    assert ingest(tokens, request(120, 30)) == [Outcome.DUPLICATE]
    assert (flushed(tokens, "input_tokens"), flushed(tokens, "output_tokens")) == (
        [Decimal(120)],
        [Decimal(30)],
    )


def test_each_item_of_a_raw_event_is_logged_under_its_feature(tokens: Runtime) -> None:
    ingest(tokens, request(120, 30))
    tokens.flush.flush_all(NOW)
    assert_log_matches_periods(tokens)
    found = tokens.event_log.find(
        [
            ("acme", "gateway", "req-1\x1finput_tokens"),
            ("acme", "gateway", "req-1\x1foutput_tokens"),
        ]
    )
    assert {k[2]: v.quantity for k, v in found.items()} == {
        "req-1\x1finput_tokens": Decimal(120),
        "req-1\x1foutput_tokens": Decimal(30),
    }


def test_a_raw_event_no_meter_reads_is_invalid_and_dead_lettered(tokens: Runtime) -> None:
    report = tokens.ingest.ingest([raw({}, type_="com.example.page_view")], now=NOW)
    assert report.outcomes == [Outcome.INVALID]
    assert "no feature meters events of type 'com.example.page_view'" in (report.reasons[0] or "")
    assert report.dead_lettered == 1


def test_a_raw_event_missing_the_value_is_invalid_with_the_property_named(tokens: Runtime) -> None:
    report = tokens.ingest.ingest([raw({"usage": {"input": 5}})], now=NOW)
    assert report.outcomes == [Outcome.INVALID]
    assert "data.usage.output is missing" in (report.reasons[0] or "")
    assert consumed(tokens, "input_tokens") == [Decimal(5)]


def test_replaying_a_partly_counted_raw_event_counts_only_the_missing_item(
    tokens: Runtime,
) -> None:
    meter(tokens, "cached_tokens", scale=0, event_type="llm.request", value_property="usage.cached")
    first = tokens.ingest.ingest([raw({"usage": {"input": 5, "output": 1, "cached": 2}})], now=NOW)
    assert first.outcomes == [Outcome.NO_ENTITLEMENT]  # no grant of cached_tokens yet
    grant(tokens, feature="cached_tokens", quantity="100")
    report = tokens.replay.replay(now=NOW, org="acme")
    assert report.outcomes == {"accepted": 1}
    assert consumed(tokens, "input_tokens") == [Decimal(5)]
    assert consumed(tokens, "cached_tokens") == [Decimal(2)]


def test_meter_filters_choose_which_events_a_feature_counts(runtime: Runtime) -> None:
    meter(
        runtime,
        "gpt4o_tokens",
        scale=0,
        event_type="llm.request",
        value_property="tokens",
        meter_filters={"model": "gpt-4o"},
    )
    grant(runtime, feature="gpt4o_tokens", quantity="1000")
    outcomes = ingest(
        runtime,
        raw({"model": "gpt-4o", "tokens": 7}, event_id="a"),
        raw({"model": "gpt-4o-mini", "tokens": 9}, event_id="b"),
    )
    assert outcomes == [Outcome.ACCEPTED, Outcome.NO_ENTITLEMENT]
    assert consumed(runtime, "gpt4o_tokens") == [Decimal(7)]


def test_a_usage_event_still_counts_on_a_metered_feature(tokens: Runtime) -> None:
    assert ingest(tokens, event(feature="input_tokens", quantity="40")) == [Outcome.ACCEPTED]
    assert consumed(tokens, "input_tokens") == [Decimal(40)]


# -- dimensions ----------------------------------------------------------------------


def test_an_entitlement_with_filters_takes_only_the_usage_it_names(runtime: Runtime) -> None:
    meter(runtime, "tokens", scale=0, event_type="llm.request", value_property="tokens")
    big = grant_for(runtime, "tokens", "1000", {"model": "gpt-4o"})
    small = grant_for(runtime, "tokens", "50", {"model": "gpt-4o-mini"})
    ingest(
        runtime,
        raw({"model": "gpt-4o", "tokens": 300}, event_id="a"),
        raw({"model": "gpt-4o-mini", "tokens": 20}, event_id="b"),
        raw({"model": "gpt-4o-mini", "tokens": 40}, event_id="c"),
    )
    by_id = {
        b.entitlement_id: b.consumed
        for b in runtime.balance.current("acme", "cust-1", "tokens", NOW)
    }
    assert by_id == {big.id: Decimal(300), small.id: Decimal(60)}  # 10 over: overage


def test_usage_matching_no_entitlements_filters_has_no_entitlement(runtime: Runtime) -> None:
    meter(runtime, "tokens", scale=0, event_type="llm.request", value_property="tokens")
    grant_for(runtime, "tokens", "1000", {"model": "gpt-4o"})
    assert ingest(runtime, raw({"model": "claude", "tokens": 3})) == [Outcome.NO_ENTITLEMENT]


def test_a_dimension_compares_json_kinds_exactly(runtime: Runtime) -> None:
    meter(runtime, "calls", scale=0, event_type="api.call", aggregation="COUNT")
    grant_for(runtime, "calls", "10", {"tier": 2})
    outcomes = ingest(
        runtime,
        raw({"tier": 2}, type_="api.call", event_id="a"),
        raw({"tier": "2"}, type_="api.call", event_id="b"),
    )
    assert outcomes == [Outcome.ACCEPTED, Outcome.NO_ENTITLEMENT]


def test_entitlement_filters_refuse_a_float_as_meters_matches_does(runtime: Runtime) -> None:
    """meters.matches refuses a float for an integer filter (docs: no matching on
    floats); the script's copy read 2.0 through cjson as 2 and matched it."""
    meter(runtime, "calls", scale=0, event_type="api.call", aggregation="COUNT")
    grant_for(runtime, "calls", "10", {"tier": 2})
    assert not matches({"tier": 2.0}, {"tier": 2})
    assert ingest(runtime, raw({"tier": 2.0}, type_="api.call")) == [Outcome.NO_ENTITLEMENT]


def test_a_meter_filter_and_an_entitlement_filter_agree_on_the_same_event(
    runtime: Runtime,
) -> None:
    meter(
        runtime, "by_meter", scale=0, aggregation="COUNT", event_type="m.call",
        meter_filters={"tier": 2},
    )  # fmt: skip
    grant(runtime, feature="by_meter", quantity="10")
    meter(runtime, "by_grant", scale=0, aggregation="COUNT", event_type="g.call")
    grant_for(runtime, "by_grant", "10", {"tier": 2})
    for n, tier in enumerate((2, 2.0, "2", True)):
        data = {"tier": tier}
        by_meter = ingest(runtime, raw(data, type_="m.call", event_id=f"m{n}"))
        by_grant = ingest(runtime, raw(data, type_="g.call", event_id=f"g{n}"))
        assert by_meter == by_grant, data


#: Events whose data holds floats (and text that looks like them) beside the values
#: filtered on: the script tells an integer from a float at the filtered path only.
_KINDS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"tier": 2, "score": 2.0}, {"tier": 2}),
    ({"score": 2.0, "tier": 2}, {"tier": 2}),
    ({"meta": {"tier": 2.0}, "tier": 2}, {"tier": 2}),
    ({"tier": 2.0, "meta": {"tier": 2}}, {"meta.tier": 2}),
    ({"tier": 2, "meta": {"tier": 2.0}}, {"meta.tier": 2}),
    ({"note": 'v2.0 "tier":2.0 \\', "tier": 2}, {"tier": 2}),
    ({"note": "x\\", "tier": 2.5, "list": [1.0, {"tier": 2}]}, {"tier": 2}),
    ({"list": [2.0, {"a": [3.5]}], "a": {"b": {"c": -7}}}, {"a.b.c": -7}),
    ({"a": {"b": {"c": -7.0}}}, {"a.b.c": -7}),
    ({"zero": -0.0}, {"zero": 0}),
    ({"zero": 0, "x": 1e300}, {"zero": 0}),
    ({"big": 1e16, "tier": 2}, {"big": 10**15, "tier": 2}),
    ({"flag": True, "f": 1.5}, {"flag": True}),
    ({"t\u00e9": 2.0, "tier": 2}, {"tier": 2}),
    ({"tier": 2, "unicode": "caf\u00e9 2.0"}, {"tier": 2, "unicode": "caf\u00e9 2.0"}),
    ({"a": {}, "b": [], "tier": 3.0, "c": {"tier": 3}}, {"c.tier": 3}),
    ({"a": {}, "tier": 3}, {"a.tier": 3}),
]


@pytest.mark.parametrize(("data", "filters"), _KINDS)
def test_an_entitlement_filter_matches_as_meters_matches_does(
    runtime: Runtime, data: dict[str, Any], filters: dict[str, Any]
) -> None:
    meter(runtime, "calls", scale=0, event_type="api.call", aggregation="COUNT")
    grant_for(runtime, "calls", "10", filters)
    expected = Outcome.ACCEPTED if matches(data, filters) else Outcome.NO_ENTITLEMENT
    assert ingest(runtime, raw(data, type_="api.call")) == [expected]


# -- aggregations --------------------------------------------------------------------


def test_count_counts_one_per_event_whatever_its_value(runtime: Runtime) -> None:
    meter(runtime, "requests", scale=0, event_type="llm.request", aggregation="COUNT")
    grant(runtime, feature="requests", quantity="10")
    ingest(runtime, *(raw({"tokens": 500}, event_id=f"r{i}") for i in range(3)))
    assert consumed(runtime, "requests") == [Decimal(3)]


# UNIQUE_COUNT tests are dated from the real clock (``utcnow()``), not from NOW: a
# period's set of values expires at an absolute time (a day after the period's late
# window), which Redis, real or fake, compares with its own clock. Dated from NOW, a
# set is deleted as it is written once that time has passed (from 2027-01-17 for a
# grant ending at NOW+20d), and every value counts again.


def around(now: datetime) -> dict[str, Any]:
    """A grant's dates and creation, ten days before ``now`` to twenty days after."""
    return {"starts_at": now - timedelta(days=10), "ends_at": now + timedelta(days=20), "now": now}


@pytest.fixture
def users(runtime: Runtime) -> Runtime:
    meter(
        runtime,
        "active_users",
        scale=0,
        event_type="login",
        aggregation="UNIQUE_COUNT",
        value_property="user",
    )
    grant(runtime, feature="active_users", quantity="3", **around(utcnow()))
    return runtime


def login(user: str | int, event_id: str, **kwargs: Any) -> dict[str, Any]:
    return raw({"user": user}, type_="login", event_id=event_id, **kwargs)


def test_unique_count_counts_each_value_once_a_period(users: Runtime) -> None:
    now = utcnow()
    logins = [login(user, n, time=now) for user, n in (("ann", "1"), ("bob", "2"), ("ann", "3"))]
    assert ingest(users, *logins, now=now) == [Outcome.ACCEPTED] * 3
    assert flushed(users, "active_users", now=now) == [Decimal(2)]
    assert_log_matches_periods(users)


def test_unique_count_tells_text_from_numbers(users: Runtime) -> None:
    now = utcnow()
    ingest(users, login("7", "1", time=now), login(7, "2", time=now), now=now)
    assert consumed(users, "active_users", now=now) == [Decimal(2)]


def test_unique_count_counts_a_value_again_in_the_next_period(runtime: Runtime) -> None:
    meter(
        runtime,
        "active_users",
        scale=0,
        event_type="login",
        aggregation="UNIQUE_COUNT",
        value_property="user",
    )
    now = utcnow()
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    late_last_month = this_month - timedelta(hours=1)  # inside the 35-day late window
    grant(
        runtime,
        feature="active_users",
        quantity=None,
        billing_type=BillingType.PAY_PER_USE,
        starts_at=last_month - timedelta(days=30),
        ends_at=now + timedelta(days=20),
        now=now,
    )
    ingest(runtime, login("ann", "1", time=late_last_month), login("ann", "2", time=now), now=now)
    runtime.flush.flush_all(now)
    periods = runtime.usage.periods_of(
        runtime.balance.current("acme", "cust-1", "active_users", now)[0].entitlement_id
    )
    by_month = {p.period_start: p.consumed for p in periods}
    assert (by_month[last_month], by_month[this_month]) == (Decimal(1), Decimal(1))


def _unique_set(
    rt: Runtime, ent: Any, now: datetime, customer: str = "cust-1"
) -> tuple[str, datetime]:
    """The Redis key of the UNIQUE_COUNT set of an entitlement's current period, and
    that period's end."""
    (balance,) = rt.balance.current("acme", customer, "active_users", now)
    assert balance.entitlement_id == ent.id
    field = f"{ent.id.hex}:{epoch_micros(balance.period_start)}"
    return f"{rt.redis_keys.used('acme', customer)}:u:{field}", balance.period_end


def _set_expires(rt: Runtime, key: str) -> datetime | None:
    """When a set expires (None: never); it must exist."""
    assert rt.redis.sismember(key, json.dumps("ann"))
    ttl_ms = rt.redis.pttl(key)
    if ttl_ms == -1:
        return None
    return datetime.now(UTC) + timedelta(milliseconds=ttl_ms)


def _kept_long_enough(rt: Runtime, expires: datetime | None, usable_until: datetime) -> bool:
    """Kept a day past the late window of the last moment its period takes usage (a
    minute's slack for the wall clock the TTL is read against)."""
    late = timedelta(seconds=rt.settings.late_window)
    return expires is None or expires >= usable_until + late + timedelta(days=1, minutes=-1)


@pytest.mark.parametrize("new_end_in_days", [100, None])
def test_a_unique_set_follows_its_period_when_the_entitlement_is_extended(
    runtime: Runtime, new_end_in_days: int | None
) -> None:
    """docs: "Each set is deleted a day after its period's late window ends". The set
    got its expiry from the period's end (now+20d) when ann was counted; extending the
    entitlement moves that same period's end, and the set must follow it (it kept
    its old expiry, after which ann counted again in the same period). Made open, the
    period's set stays."""
    meter(
        runtime, "active_users", scale=0, event_type="login", aggregation="UNIQUE_COUNT",
        value_property="user",
    )  # fmt: skip
    now = utcnow()
    new_end = None if new_end_in_days is None else now + timedelta(days=new_end_in_days)
    ent = grant(runtime, feature="active_users", quantity="100", **around(now))
    assert ingest(runtime, login("ann", "l1", time=now), now=now) == [Outcome.ACCEPTED]
    runtime.catalog.update_entitlement(
        "acme", ent.id, EntitlementChange(row_version=ent.row_version, ends_at=new_end), now
    )
    key, period_end = _unique_set(runtime, ent, now)
    assert period_end == new_end  # the same period, now longer (or open)
    expires = _set_expires(runtime, key)
    if new_end is None:
        assert expires is None
    else:
        assert _kept_long_enough(runtime, expires, new_end), expires


def test_a_unique_set_of_a_period_in_grace_is_kept_while_it_takes_usage(
    runtime: Runtime,
) -> None:
    """Ended a day ago with 60 days of grace: the last period takes usage until the
    grace ends, so its set must outlive it (it expired a day after the late window of
    the latest value counted, and ann could count twice in the one period)."""
    meter(
        runtime, "active_users", scale=0, event_type="login", aggregation="UNIQUE_COUNT",
        value_property="user",
    )  # fmt: skip
    now = utcnow()
    ent = grant(
        runtime, feature="active_users", quantity="100", starts_at=now - timedelta(days=10),
        ends_at=now - timedelta(days=1), grace=timedelta(days=60), now=now,
    )  # fmt: skip
    assert ingest(runtime, login("ann", "l1", time=now), now=now) == [Outcome.ACCEPTED]
    key, _ = _unique_set(runtime, ent, now)
    expires = _set_expires(runtime, key)
    assert _kept_long_enough(runtime, expires, now + timedelta(days=59)), expires


def test_a_unique_value_counts_once_in_the_periods_of_every_grant_that_took_it(
    runtime: Runtime,
) -> None:
    """A (limit 5) ended an hour ago, B (limit 5) runs on; ann logs in two hours ago
    (A and B are candidates) and half an hour ago (B alone). Counted on A first, she
    went into A's set only and B counted her again, though both logins lie in B's
    period. A counted value now goes into the set of every candidate: she counts
    once whatever the order. Which grant she lands on follows the order of arrival,
    as any unit of a burn-down does (docs/meters.md)."""
    meter(
        runtime, "active_users", scale=0, event_type="login", aggregation="UNIQUE_COUNT",
        value_property="user",
    )  # fmt: skip
    now = utcnow()
    results = []
    for customer, order in (("in-order", (120, 30)), ("newest-first", (30, 120))):
        a = grant(
            runtime, customer, "5", feature="active_users", priority=0,
            **{**around(now), "ends_at": now - timedelta(hours=1)},
        )  # fmt: skip
        b = grant(runtime, customer, "5", feature="active_users", priority=1, **around(now))
        for ago in order:
            payload = login(
                "ann", f"{customer}-{ago}", customer=customer, time=now - timedelta(minutes=ago)
            )
            assert ingest(runtime, payload, now=now) == [Outcome.ACCEPTED]
        live = {
            x.entitlement_id: x.consumed
            for x in runtime.balance.current("acme", customer, "active_users", now)
        }
        results.append([live[a.id], live[b.id]])
    assert results == [[Decimal(1), Decimal(0)], [Decimal(0), Decimal(1)]]


@pytest.fixture
def storage(runtime: Runtime) -> Runtime:
    meter(
        runtime,
        "storage_gb",
        scale=3,
        event_type="storage.sample",
        aggregation="MAX",
        value_property="gb",
    )
    return runtime


def sample(gb: str, event_id: str, **kwargs: Any) -> dict[str, Any]:
    return raw({"gb": gb}, type_="storage.sample", event_id=event_id, **kwargs)


def test_max_keeps_the_peak_of_the_period(storage: Runtime) -> None:
    grant(storage, feature="storage_gb", quantity="100")
    ingest(storage, sample("5.5", "1"), sample("9.25", "2"), sample("7", "3"))
    assert flushed(storage, "storage_gb") == [Decimal("9.25")]
    assert_log_matches_periods(storage)


def test_a_peak_spreads_down_the_grants_like_a_sum(storage: Runtime) -> None:
    base = grant(storage, feature="storage_gb", quantity="10", priority=0)
    extra = grant(storage, feature="storage_gb", quantity="50", priority=1)
    ingest(storage, sample("4", "1"), sample("25", "2"), sample("12", "3"))
    by_id = {
        b.entitlement_id: b.consumed
        for b in storage.balance.current("acme", "cust-1", "storage_gb", NOW)
    }
    assert by_id == {base.id: Decimal(10), extra.id: Decimal(15)}


@pytest.fixture
def seats(runtime: Runtime) -> Runtime:
    meter(
        runtime,
        "seats",
        scale=0,
        event_type="seats.count",
        aggregation="LATEST",
        value_property="n",
    )
    grant(runtime, feature="seats", quantity="50")
    return runtime


def seat_count(n: int, event_id: str, minutes_ago: int) -> dict[str, Any]:
    return raw(
        {"n": n},
        type_="seats.count",
        event_id=event_id,
        time=NOW - timedelta(minutes=minutes_ago),
    )


def test_latest_keeps_the_value_of_the_latest_event_by_time(seats: Runtime) -> None:
    ingest(seats, seat_count(12, "b", minutes_ago=5), seat_count(30, "a", minutes_ago=10))
    assert consumed(seats, "seats") == [Decimal(12)]


def test_a_latest_level_may_fall_and_the_flush_keeps_it_exact(seats: Runtime) -> None:
    ingest(seats, seat_count(30, "a", minutes_ago=10))
    seats.flush.flush_all(NOW)
    ingest(seats, seat_count(8, "b", minutes_ago=5))
    assert flushed(seats, "seats") == [Decimal(8)]
    assert_log_matches_periods(seats)


def _crossings(rt: Runtime, entitlement_id: Any) -> list[tuple[int, str]]:
    return sorted(
        (n["threshold_percent"], n["consumed"])
        for n in (
            json.loads(x.payload)["data"]
            for x in rt.notification_store.all_for(entitlement_id)
            if x.type == "entitlement.threshold_crossed"
        )
    )


@pytest.mark.parametrize(
    "samples",
    [
        [(60, 10), (10, 5)],  # up past the limit, then down
        [(10, 15), (60, 10), (10, 5)],  # from 10, up and back to 10: no net change
    ],
)
def test_a_latest_level_that_passes_the_limit_notifies_whatever_the_batching(
    runtime: Runtime, samples: list[tuple[int, int]]
) -> None:
    """Seats 60 of 50, then 10 again: sent one event a batch, 80% and 100% notify;
    sent in one batch, the script judged the batch's net change and none did."""
    meter(
        runtime, "seats", scale=0, event_type="seats.count", aggregation="LATEST",
        value_property="n",
    )  # fmt: skip
    results = []
    for customer, batches in (
        ("one-a-batch", [[s] for s in samples]),
        ("one-batch", [samples]),
    ):
        ent = grant(runtime, customer, "50", feature="seats")
        for batch in batches:
            payloads = [
                raw({"n": n}, type_="seats.count", event_id=f"{customer}-{ago}",
                    customer=customer, time=NOW - timedelta(minutes=ago))
                for n, ago in batch
            ]  # fmt: skip
            ingest(runtime, *payloads)
        runtime.flush.flush_all(NOW)
        results.append(_crossings(runtime, ent.id))
    assert results[0] == [(80, "60"), (100, "60")]
    assert results[1] == results[0]


# -- scales and exact bounds -------------------------------------------------------


def test_a_scale_0_feature_refuses_a_fraction(tokens: Runtime) -> None:
    report = tokens.ingest.ingest([event(feature="input_tokens", quantity="1.5")], now=NOW)
    assert report.outcomes == [Outcome.INVALID]
    assert "scale 0" in (report.reasons[0] or "")


def test_a_scale_0_counter_holds_large_integers_exactly(runtime: Runtime) -> None:
    meter(runtime, "bytes", scale=0)
    grant(runtime, feature="bytes", quantity=None, billing_type=BillingType.PAY_PER_USE)
    big = "4000000000000000"  # 4 x 10^15
    ingest(runtime, *(event(feature="bytes", quantity=big, event_id=f"e{i}") for i in range(2)))
    ingest(runtime, *(event(feature="bytes", quantity="1", event_id=f"one{i}") for i in range(3)))
    expected = 2 * Decimal(big) + 3
    assert consumed(runtime, "bytes") == [expected]
    assert flushed(runtime, "bytes") == [expected]


def test_past_the_exact_bound_an_event_is_refused_never_rounded(runtime: Runtime) -> None:
    """The issue's example: at scale 6, 9007199254.740991 is the whole counter."""
    grant(runtime, quantity=None, billing_type=BillingType.PAY_PER_USE)
    report = runtime.ingest.ingest(
        [
            event(quantity="9007199254.740991", event_id="a"),
            event(quantity="9007199254.740991", event_id="b"),
            event(quantity="0.000001", event_id="c"),
        ],
        now=NOW,
    )
    assert report.outcomes == [Outcome.ACCEPTED, Outcome.INVALID, Outcome.INVALID]
    assert "past what it holds exactly" in (report.reasons[1] or "")
    assert flushed(runtime, "api_calls") == [Decimal("9007199254.740991")]


def test_a_sum_the_first_grant_takes_whole_is_not_refused_for_a_big_counter_it_never_touches(
    runtime: Runtime,
) -> None:
    """B (unlimited, burned last) holds 2^53 - 3 units; A (limit 10, burned first) has
    all its room. 5 units land on A alone and are counted; 15 would put 5 on B, past
    its bound, and are refused whole (the check once refused both, for B)."""
    meter(runtime, "bytes", scale=0)
    b = grant(runtime, quantity=None, feature="bytes", priority=1)
    top = 2**53 - 3
    assert ingest(runtime, event(feature="bytes", quantity=str(top), event_id="fill")) == [
        Outcome.ACCEPTED
    ]
    a = grant(runtime, quantity="10", feature="bytes", priority=0)
    report = runtime.ingest.ingest(
        [
            event(feature="bytes", quantity="15", event_id="past"),
            event(feature="bytes", quantity="5", event_id="small"),
        ],
        now=NOW,
    )
    assert report.outcomes == [Outcome.INVALID, Outcome.ACCEPTED], report.reasons
    by_id = {
        x.entitlement_id: x.consumed
        for x in runtime.balance.current("acme", "cust-1", "bytes", NOW)
    }
    assert by_id == {a.id: Decimal(5), b.id: Decimal(top)}


# -- reserve -----------------------------------------------------------------------


def test_a_gauge_cannot_be_reserved(storage: Runtime) -> None:
    from meterd.core.errors import InvalidError
    from meterd.services.reserve import Reservation

    grant(storage, feature="storage_gb", quantity="100")
    with pytest.raises(InvalidError, match="only SUM and COUNT"):
        storage.reserve.reserve(
            Reservation("acme", "cust-1", "storage_gb", Decimal(1), "key-1"), NOW
        )


def reserve_with(rt: Runtime, key: str, quantity: str, data: dict[str, Any] | None) -> Any:
    from meterd.services.reserve import Reservation

    request = Reservation("acme", "cust-1", "api_calls", Decimal(quantity), key, data=data)
    return rt.reserve.reserve(request, NOW)


@pytest.fixture
def per_model(runtime: Runtime) -> Runtime:
    """10 api_calls for gpt-4o, 5 for o3 (dimension filters on ``model``)."""
    grant_for(runtime, "api_calls", "10", {"model": "gpt-4o"})
    grant_for(runtime, "api_calls", "5", {"model": "o3"})
    return runtime


def test_a_reservation_takes_room_from_the_grant_its_data_matches(per_model: Runtime) -> None:
    from meterd.services.reserve import ReserveOutcome

    assert reserve_with(per_model, "k1", "4", {"model": "o3"}) is ReserveOutcome.GRANTED
    assert sorted(consumed(per_model, "api_calls")) == [Decimal(0), Decimal(4)]


def test_a_reservation_past_the_room_of_its_dimension_is_denied(per_model: Runtime) -> None:
    """The gpt-4o grant has room, but the reservation is for o3."""
    from meterd.services.reserve import ReserveOutcome

    assert reserve_with(per_model, "k1", "6", {"model": "o3"}) is ReserveOutcome.DENIED


def test_a_reservation_without_data_matches_no_grant_with_filters(per_model: Runtime) -> None:
    from meterd.services.reserve import ReserveOutcome

    assert reserve_with(per_model, "k1", "1", None) is ReserveOutcome.NO_ENTITLEMENT


def test_a_reservations_data_is_kept_in_the_event_log(per_model: Runtime) -> None:
    reserve_with(per_model, "k1", "2", {"model": "gpt-4o", "request": "r-9"})
    per_model.flush.flush_all(NOW)
    page = per_model.usage_report.events(
        "acme",
        "cust-1",
        feature="api_calls",
        start=NOW,
        end=NOW + timedelta(seconds=1),
        cursor=None,
        limit=10,
    )
    assert [e.data for e in page.events] == [{"model": "gpt-4o", "request": "r-9"}]


def test_reservation_data_nested_too_deep_is_refused(per_model: Runtime) -> None:
    from meterd.core.errors import InvalidError

    deep: dict[str, Any] = {}
    for _ in range(20):
        deep = {"x": deep}
    with pytest.raises(InvalidError, match="nested deeper"):
        reserve_with(per_model, "k1", "1", deep)


def test_a_count_past_the_bound_of_a_big_counter_is_refused_in_a_later_batch(
    runtime: Runtime,
) -> None:
    meter(runtime, "bytes", scale=0)
    grant(runtime, feature="bytes", quantity=None, billing_type=BillingType.PAY_PER_USE)
    assert ingest(runtime, event(feature="bytes", quantity="5000000000000000")) == [
        Outcome.ACCEPTED
    ]
    later = event(feature="bytes", quantity="4100000000000000", event_id="e2")
    assert ingest(runtime, later) == [Outcome.INVALID]
    assert flushed(runtime, "bytes") == [Decimal("5000000000000000")]


def test_a_big_counter_reloaded_from_the_database_still_bounds_the_count(
    runtime: Runtime,
) -> None:
    meter(runtime, "bytes", scale=0)
    grant(runtime, feature="bytes", quantity=None, billing_type=BillingType.PAY_PER_USE)
    ingest(runtime, event(feature="bytes", quantity="5000000000000000"))
    runtime.flush.flush_all(NOW)
    keys = runtime.redis_keys
    runtime.redis.delete(keys.used("acme", "cust-1"), keys.big_counters)
    runtime.redis.delete(keys.resolution("acme", "cust-1", "bytes"))  # reloaded and seeded
    later = event(feature="bytes", quantity="4100000000000000", event_id="e2")
    assert ingest(runtime, later) == [Outcome.INVALID]
    assert ingest(runtime, event(feature="bytes", quantity="7", event_id="e3")) == [
        Outcome.ACCEPTED
    ]
    assert consumed(runtime, "bytes") == [Decimal("5000000000000007")]


def test_a_feature_created_after_the_meters_were_read_counts_at_its_own_scale(
    runtime: Runtime,
) -> None:
    """The worker's meters are cached; one it has not seen is read at once, never
    counted with the defaults (a scale-0 feature counted as scale 6 would count
    each unit a million times)."""
    grant(runtime, quantity=None, billing_type=BillingType.PAY_PER_USE)
    ingest(runtime, event(event_id="warm"))  # the org's meters are now cached
    runtime.catalog.create_feature("acme", "bytes", now=NOW, scale=0)
    grant(runtime, feature="bytes", quantity="10")
    assert ingest(runtime, event(feature="bytes", quantity="3", event_id="b1")) == [
        Outcome.ACCEPTED
    ]
    assert flushed(runtime, "bytes") == [Decimal(3)]


def test_a_meter_created_after_the_meters_were_read_reads_its_raw_events_at_once(
    runtime: Runtime,
) -> None:
    grant(runtime, quantity=None, billing_type=BillingType.PAY_PER_USE)
    ingest(runtime, event(event_id="warm"))
    runtime.catalog.create_feature(
        "acme", "tokens", now=NOW, scale=0, event_type="llm.request", value_property="n"
    )
    grant(runtime, feature="tokens", quantity="100")
    assert ingest(runtime, raw({"n": 7})) == [Outcome.ACCEPTED]
    assert consumed(runtime, "tokens") == [Decimal(7)]


def test_a_second_meter_for_a_known_event_type_counts_from_the_next_batch(
    tokens: Runtime,
) -> None:
    """The worker already reads llm.request events with two meters; a third is found
    by the org's meters version, not only when the kept list expires."""
    assert ingest(tokens, request(10, 20, event_id="before")) == [Outcome.ACCEPTED]
    meter(tokens, "requests", aggregation="COUNT", event_type="llm.request")
    grant(tokens, feature="requests", quantity="100")
    assert ingest(tokens, request(1, 2, event_id="after")) == [Outcome.ACCEPTED]
    assert consumed(tokens, "requests") == [Decimal(1)]
    assert consumed(tokens, "input_tokens") == [Decimal(11)]


def test_a_reservation_on_a_feature_created_after_the_meters_were_read_uses_its_scale(
    runtime: Runtime,
) -> None:
    from meterd.services.reserve import Reservation, ReserveOutcome

    grant(runtime, quantity="100")
    warm = Reservation("acme", "cust-1", "api_calls", Decimal(1), "warm")
    runtime.reserve.reserve(warm, NOW)  # the org's meters are now cached
    runtime.catalog.create_feature("acme", "seats", now=NOW, scale=0)
    grant(runtime, feature="seats", quantity="10")
    seats = Reservation("acme", "cust-1", "seats", Decimal(3), "k1")
    assert runtime.reserve.reserve(seats, NOW) is ReserveOutcome.GRANTED
    assert consumed(runtime, "seats") == [Decimal(3)]
