"""Alert rules (issue 23 item 3): judged by ingest.lua in the counting step, each
firing at most once per entitlement period, through the notification outbox."""

from __future__ import annotations

import hashlib
import json
import random
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterd.core.domain import BillingType
from meterd.core.errors import InvalidError, NotFoundError
from meterd.core.notifications import PERCENT_ONE, AlertKind, AlertRule, percent_point
from meterd.core.terms import Term
from meterd.runtime import Runtime
from meterd.services.alert_rules import AlertRuleService, AlertRuleSpec
from meterd.storage.alert_rules import AlertRuleStore, StoredRule
from meterd.storage.resolution import decode_resolution
from meterd.testing import event

from .conftest import NOW
from .helpers import grant
from .lua_fragment import Fragment


def rules_of(rt: Runtime) -> AlertRuleService:
    return AlertRuleService(AlertRuleStore(rt.database.sessions), rt.features, rt.resolution)


def add_rule(rt: Runtime, kind: AlertKind, threshold: str, **scope: Any) -> StoredRule:
    return rules_of(rt).create(
        AlertRuleSpec(org=scope.pop("org", "acme"), kind=kind, threshold=threshold, **scope), NOW
    )


def usage(rt: Runtime, *quantities: str, prefix: str = "e", **extra: Any) -> None:
    rt.ingest.ingest(
        [
            event(quantity=q, event_id=f"{prefix}-{i}", time=NOW, **extra)
            for i, q in enumerate(quantities)
        ],
        now=NOW,
    )


def fired(rt: Runtime, entitlement_id: Any) -> list[dict[str, Any]]:
    """The data of each threshold notification of an entitlement, by rule id."""
    notes = [
        json.loads(n.payload)["data"]
        for n in rt.notification_store.all_for(entitlement_id)
        if n.type == "entitlement.threshold_crossed"
    ]
    return sorted(notes, key=lambda d: d["rule"]["id"])


def fired_ids(rt: Runtime, entitlement_id: Any) -> list[str]:
    return [d["rule"]["id"] for d in fired(rt, entitlement_id)]


# -- defaults ---------------------------------------------------------------------------


def test_an_org_without_rules_keeps_80_and_100_with_the_notification_ids_of_before(
    runtime: Runtime,
) -> None:
    ent = grant(runtime, quantity="100")
    usage(runtime, "80", "25")
    runtime.flush.flush_all(NOW)
    notes = [n for n in runtime.notification_store.all_for(ent.id) if n.type.endswith("crossed")]
    before_rules = {
        "ntf_thr_"
        + hashlib.sha256(f"{ent.id.hex}:{ent.starts_at.isoformat()}:{pct}".encode()).hexdigest()[
            :32
        ]
        for pct in (80, 100)
    }
    assert {n.id for n in notes} == before_rules
    data = fired(runtime, ent.id)
    assert [(d["rule"], d["threshold_percent"]) for d in data] == [
        ({"id": "default_100", "kind": "PERCENT", "threshold": "100"}, 100),
        ({"id": "default_80", "kind": "PERCENT", "threshold": "80"}, 80),
    ]


def test_an_org_with_rules_has_only_its_rules(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100")
    rule = add_rule(runtime, AlertKind.PERCENT, "90")
    usage(runtime, "100")
    runtime.flush.flush_all(NOW)
    assert fired_ids(runtime, ent.id) == [rule.id]


# -- each kind ---------------------------------------------------------------------------


def test_percent_150_fires_past_the_limit_once(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100")
    rule = add_rule(runtime, AlertKind.PERCENT, "150")
    usage(runtime, "149.999999", prefix="a")
    runtime.flush.flush_all(NOW)
    assert fired(runtime, ent.id) == []
    usage(runtime, "0.000001", "7", prefix="b")
    usage(runtime, "30", prefix="c")
    runtime.flush.flush_all(NOW)
    (data,) = fired(runtime, ent.id)
    assert data["rule"] == {"id": rule.id, "kind": "PERCENT", "threshold": "150"}
    assert (data["quantity"], data["consumed"]) == ("100", "157")
    assert "threshold_percent" not in data


def test_a_fractional_percent_is_judged_exactly(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="3")
    add_rule(runtime, AlertKind.PERCENT, "33.3333")  # 0.999999 of 3
    usage(runtime, "0.999998", prefix="a")
    runtime.flush.flush_all(NOW)
    assert fired(runtime, ent.id) == []
    usage(runtime, "0.000001", prefix="b")
    runtime.flush.flush_all(NOW)
    assert [d["consumed"] for d in fired(runtime, ent.id)] == ["0.999999"]


def test_remaining_fires_when_what_remains_reaches_the_threshold(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100")
    rule = add_rule(runtime, AlertKind.REMAINING, "10")
    usage(runtime, "89.5", prefix="a")
    runtime.flush.flush_all(NOW)
    assert fired(runtime, ent.id) == []
    usage(runtime, "0.5", prefix="b")
    runtime.flush.flush_all(NOW)
    (data,) = fired(runtime, ent.id)
    assert data["rule"] == {"id": rule.id, "kind": "REMAINING", "threshold": "10"}
    assert data["consumed"] == "90"


def test_consumed_fires_on_pay_per_use_and_unlimited_grants(runtime: Runtime) -> None:
    ppu = grant(runtime, customer="ppu", quantity=None, billing_type=BillingType.PAY_PER_USE)
    unlimited = grant(runtime, customer="unl", quantity=None)
    limited = grant(runtime, customer="lim", quantity="10")
    consumed = add_rule(runtime, AlertKind.CONSUMED, "25")
    add_rule(runtime, AlertKind.PERCENT, "50")  # needs a limit: only on "lim"
    add_rule(runtime, AlertKind.REMAINING, "1")  # likewise
    for customer in ("ppu", "unl", "lim"):
        usage(runtime, "20", "6", prefix=customer, customer=customer)
    runtime.flush.flush_all(NOW)
    for ent in (ppu, unlimited):
        (data,) = fired(runtime, ent.id)
        assert data["rule"]["id"] == consumed.id
        assert (data["quantity"], data["consumed"]) == (None, "26")
    assert len(fired(runtime, limited.id)) == 3


# -- once per period, under races and redelivery -------------------------------------


@pytest.mark.parametrize(
    ("kind", "threshold"),
    [(AlertKind.PERCENT, "150"), (AlertKind.REMAINING, "50"), (AlertKind.CONSUMED, "120")],
)
def test_each_kind_fires_once_under_20_concurrent_batches_crossing_it(
    runtime: Runtime, kind: AlertKind, threshold: str
) -> None:
    ent = grant(runtime, quantity="100")
    rule = add_rule(runtime, kind, threshold)
    usage(runtime, "1", prefix="warm")  # the resolution entry is cached
    start = threading.Barrier(20)
    errors: list[BaseException] = []

    def batch(n: int) -> None:
        try:
            start.wait()
            usage(runtime, "5", "5", prefix=f"t{n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=batch, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    runtime.flush.flush_all(NOW)
    usage(runtime, "10", prefix="after")
    runtime.flush.flush_all(NOW)
    (data,) = fired(runtime, ent.id)
    assert data["rule"]["id"] == rule.id
    assert Decimal(data["consumed"]) % 10 == 1  # the peak of the one batch that crossed


def test_a_redelivered_batch_never_fires_twice(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100")
    add_rule(runtime, AlertKind.CONSUMED, "50")
    usage(runtime, "30", "30")
    usage(runtime, "30", "30")  # redelivered before the flush: duplicates
    runtime.flush.flush_all(NOW)
    usage(runtime, "30", "30")  # and after it
    runtime.flush.flush_all(NOW)
    (data,) = fired(runtime, ent.id)
    assert data["consumed"] == "60"


def test_each_period_of_a_renewing_grant_fires_again(runtime: Runtime) -> None:
    start = NOW - timedelta(days=40)
    ent = grant(
        runtime, quantity="10", starts_at=start, ends_at=start + timedelta(days=30),
        auto_renew=True, term=Term(months=1),
    )  # fmt: skip
    rule = add_rule(runtime, AlertKind.CONSUMED, "5")
    runtime.ingest.ingest(
        [
            event(quantity="6", event_id="old", time=NOW - timedelta(days=15)),
            event(quantity="6", event_id="new", time=NOW),
        ],
        now=NOW,
    )
    runtime.flush.flush_all(NOW)
    data = fired(runtime, ent.id)
    assert [d["rule"]["id"] for d in data] == [rule.id, rule.id]
    assert len({d["period_start"] for d in data}) == 2


# -- scopes and changes ---------------------------------------------------------------


def test_every_rule_whose_scope_takes_an_entitlement_in_applies(runtime: Runtime) -> None:
    runtime.catalog.create_feature("acme", "storage", now=NOW)
    ent = grant(runtime, quantity="1000")
    other = grant(runtime, quantity="1000")
    org_wide = add_rule(runtime, AlertKind.CONSUMED, "1")
    by_feature = add_rule(runtime, AlertKind.CONSUMED, "2", feature="api_calls")
    add_rule(runtime, AlertKind.CONSUMED, "3", feature="storage")
    by_customer = add_rule(runtime, AlertKind.CONSUMED, "4", customer_id="cust-1")
    add_rule(runtime, AlertKind.CONSUMED, "5", customer_id="cust-2")
    by_ent = add_rule(runtime, AlertKind.CONSUMED, "6", entitlement_id=ent.id)
    add_rule(runtime, AlertKind.CONSUMED, "7", entitlement_id=other.id)
    usage(runtime, "100", entitlement_id=str(ent.id))
    runtime.flush.flush_all(NOW)
    assert fired_ids(runtime, ent.id) == sorted(
        [org_wide.id, by_feature.id, by_customer.id, by_ent.id]
    )


def test_a_rule_change_reaches_ingest_at_once(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="100")
    usage(runtime, "1", prefix="a")  # the entry is cached with the defaults
    rule = add_rule(runtime, AlertKind.CONSUMED, "10")
    raw = runtime.redis.get(runtime.redis_keys.resolution("acme", "cust-1", "api_calls"))
    (view,) = decode_resolution(raw)
    assert view.alert_rules == ((rule.id, "C", 10_000_000),)  # units of scale 6
    usage(runtime, "84", prefix="b")  # past 80 %: no default any more
    runtime.flush.flush_all(NOW)
    assert fired_ids(runtime, ent.id) == [rule.id]
    rules_of(runtime).delete("acme", rule.id, NOW)  # the org's last: the defaults again
    usage(runtime, "20", prefix="c")
    runtime.flush.flush_all(NOW)
    assert fired_ids(runtime, ent.id) == sorted(["default_100", rule.id])


def test_a_crossing_recorded_before_its_rule_was_deleted_is_still_notified(
    runtime: Runtime,
) -> None:
    ent = grant(runtime, quantity="100")
    rule = add_rule(runtime, AlertKind.CONSUMED, "10")
    usage(runtime, "10")
    rules_of(runtime).delete("acme", rule.id, NOW)
    runtime.flush.flush_all(NOW)
    assert fired_ids(runtime, ent.id) == [rule.id]


@pytest.mark.parametrize(
    ("kind", "threshold"),
    [
        (AlertKind.PERCENT, "0"),
        (AlertKind.PERCENT, "10000.0001"),
        (AlertKind.PERCENT, "12.34567"),
        (AlertKind.CONSUMED, "0"),
        (AlertKind.CONSUMED, "1e3"),
    ],
)
def test_a_threshold_out_of_bounds_is_refused(
    runtime: Runtime, kind: AlertKind, threshold: str
) -> None:
    with pytest.raises(InvalidError):
        add_rule(runtime, kind, threshold)


def test_a_rule_has_one_scope_of_the_org(runtime: Runtime) -> None:
    with pytest.raises(InvalidError):
        add_rule(runtime, AlertKind.CONSUMED, "1", feature="api_calls", customer_id="c")
    with pytest.raises(NotFoundError):
        add_rule(runtime, AlertKind.CONSUMED, "1", feature="nope")
    with pytest.raises(NotFoundError):
        add_rule(runtime, AlertKind.CONSUMED, "1", org="globex", entitlement_id=grant(runtime).id)
    assert add_rule(runtime, AlertKind.REMAINING, "0").scope == "org"


# -- the Lua twin -----------------------------------------------------------------------


def test_the_lua_percent_point_is_the_python_one() -> None:
    lua = Fragment("ingest/thresholds", ["percent_point", "threshold_point"])
    rng = random.Random(23)
    limits = [1, 3, 7, 99, 100, 101, 999_999, 1_000_000, 1_000_001, 10**12 + 7]
    limits += [2**53 - 1 - k for k in range(5)] + [rng.randrange(1, 2**53) for _ in range(300)]
    percents = [1, 1, 333_333, 800_000, PERCENT_ONE, 1_500_000, 100_000_000]
    percents += [rng.randrange(1, 100_000_000) for _ in range(300)]
    for limit in limits:
        for p in rng.sample(percents, 20) + percents[:7]:
            want = percent_point(limit, p)
            if want >= 2**53:
                continue  # beyond every counter (MAX_UNITS): never reached
            assert int(lua.percent_point(float(limit), float(p))) == want, (limit, p)
    for limit in limits[:40]:
        for pct in (80, 100):
            assert int(lua.threshold_point(float(limit), float(pct))) == percent_point(
                limit, pct * 10_000
            )


def test_a_rule_point_in_python() -> None:
    rule = AlertRule("ar_1", AlertKind.REMAINING, Decimal("2.5"))
    assert rule.point(10, 0) == 8  # remaining 2 is the first whole unit at or below 2.5
    assert AlertRule("ar_1", AlertKind.CONSUMED, Decimal("2.5")).point(None, 0) == 3
    assert AlertRule("ar_1", AlertKind.PERCENT, Decimal("150")).point(None, 6) is None
