"""Allotments (issue 23 item 5, CONTRACT 6b): a provider carves a child grant out of
its own. The parent's limit drops by what it allots, in the transaction that
creates the child, under the parent row's lock: racing carves never allot more
than remained; the child's usage burns the child's grant."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterd.core.domain import Outcome, Status
from meterd.core.errors import ConflictError, InvalidError
from meterd.runtime import Runtime
from meterd.services.reserve import Reservation, ReserveOutcome
from meterd.testing import event

from .conftest import NOW
from .helpers import grant


def ingest(rt: Runtime, *events: dict[str, Any]) -> list[Outcome]:
    return rt.ingest.ingest(list(events), now=NOW).outcomes


def ask(quantity: Decimal, key: str) -> Reservation:
    return Reservation("acme", "provider", "api_calls", quantity, key)


def value(rt: Runtime, customer: str) -> Any:
    return rt.balance.value("acme", customer, "api_calls", NOW)


def test_an_allotment_carves_the_child_out_of_the_parent(runtime: Runtime) -> None:
    parent = grant(runtime, "provider", quantity="100")
    result = runtime.allotments.allot("acme", parent.id, "child-1", Decimal(30), NOW)
    child = result.child
    assert result.created
    assert (child.customer_id, child.parent_id, child.quantity) == ("child-1", parent.id, 30)
    assert (child.ends_at, child.status) == (parent.ends_at, Status.ACTIVE)
    assert value(runtime, "provider").remaining == Decimal(70)
    assert value(runtime, "child-1").remaining == Decimal(30)
    assert runtime.allotments.allotted([parent.id]) == {parent.id: Decimal(30)}
    [row] = runtime.allotments.children("acme", parent.id)
    assert (row.child_id, row.customer_id, row.quantity) == (child.id, "child-1", Decimal(30))


def test_the_childs_usage_burns_the_child_grant(runtime: Runtime) -> None:
    parent = grant(runtime, "provider", quantity="100")
    child = runtime.allotments.allot("acme", parent.id, "child-1", Decimal(30), NOW).child
    assert ingest(runtime, event("child-1", "12", event_id="c1", time=NOW)) == [Outcome.ACCEPTED]
    assert ingest(runtime, event("provider", "5", event_id="p1", time=NOW)) == [Outcome.ACCEPTED]
    kid, provider = value(runtime, "child-1"), value(runtime, "provider")
    assert [b.entitlement_id for b in kid.balances] == [child.id]
    assert (kid.consumed, kid.remaining) == (Decimal(12), Decimal(18))
    assert (provider.consumed, provider.remaining) == (Decimal(5), Decimal(65))
    runtime.flush.flush_all(NOW)
    assert value(runtime, "child-1").remaining == Decimal(18)
    assert value(runtime, "provider").remaining == Decimal(65)


def test_the_parent_limit_is_seen_by_reserve_at_once(runtime: Runtime) -> None:
    parent = grant(runtime, "provider", quantity="100")
    runtime.allotments.allot("acme", parent.id, "child-1", Decimal(95), NOW)
    denied = runtime.reserve.reserve(ask(Decimal(6), "r1"), NOW)
    assert denied is ReserveOutcome.DENIED
    assert runtime.reserve.reserve(ask(Decimal(5), "r2"), NOW) is ReserveOutcome.GRANTED


def test_more_than_remains_is_refused_counting_usage_and_holds(runtime: Runtime) -> None:
    parent = grant(runtime, "provider", quantity="100")
    assert ingest(runtime, event("provider", "40", event_id="p1", time=NOW)) == [Outcome.ACCEPTED]
    assert runtime.holds.hold(ask(Decimal(10), "h1"), 600, NOW).outcome is ReserveOutcome.GRANTED
    with pytest.raises(ConflictError, match=r"has 50\.000000 remaining"):
        runtime.allotments.allot("acme", parent.id, "child-1", Decimal("50.000001"), NOW)
    runtime.allotments.allot("acme", parent.id, "child-1", Decimal(50), NOW)
    with pytest.raises(ConflictError):
        runtime.allotments.allot("acme", parent.id, "child-2", Decimal(1), NOW)
    assert value(runtime, "provider").remaining == Decimal(0)


def test_a_retry_with_the_same_key_answers_the_same_child(runtime: Runtime) -> None:
    parent = grant(runtime, "provider", quantity="100")
    first = runtime.allotments.allot(
        "acme", parent.id, "child-1", Decimal(30), NOW, idempotency_key="k1"
    )
    again = runtime.allotments.allot(
        "acme", parent.id, "child-1", Decimal(30), NOW, idempotency_key="k1"
    )
    assert (first.created, again.created) == (True, False)
    assert again.child.id == first.child.id
    assert value(runtime, "provider").remaining == Decimal(70)
    with pytest.raises(ConflictError, match="idempotency key"):
        runtime.allotments.allot(
            "acme", parent.id, "child-1", Decimal(31), NOW, idempotency_key="k1"
        )


def test_what_cannot_allot(runtime: Runtime) -> None:
    unlimited = grant(runtime, "provider", quantity=None)
    with pytest.raises(ConflictError, match="unlimited"):
        runtime.allotments.allot("acme", unlimited.id, "child-1", Decimal(1), NOW)
    parent = grant(runtime, "provider-2", quantity="10")
    with pytest.raises(InvalidError, match="another customer"):
        runtime.allotments.allot("acme", parent.id, "provider-2", Decimal(1), NOW)
    with pytest.raises(InvalidError, match="positive"):
        runtime.allotments.allot("acme", parent.id, "child-1", Decimal(0), NOW)
    runtime.catalog.void_entitlement(parent.id, NOW, reason="refund")
    with pytest.raises(ConflictError, match="TERMINATED"):
        runtime.allotments.allot("acme", parent.id, "child-1", Decimal(1), NOW)


def test_a_recorded_cap_bounds_the_sum_of_allotments(runtime: Runtime) -> None:
    parent = grant(runtime, "provider", quantity="100", allotment=Decimal(40))
    runtime.allotments.allot("acme", parent.id, "child-1", Decimal(30), NOW)
    with pytest.raises(ConflictError, match="may allot 40"):
        runtime.allotments.allot("acme", parent.id, "child-2", Decimal(11), NOW)
    runtime.allotments.allot("acme", parent.id, "child-2", Decimal(10), NOW)


def test_a_renewing_parent_carves_its_renewals_and_the_child_renews_with_it(
    runtime: Runtime,
) -> None:
    parent = grant(
        runtime,
        "provider",
        quantity="100",
        starts_at=NOW - timedelta(days=10),
        ends_at=NOW + timedelta(days=20),
        auto_renew=True,
    )
    child = runtime.allotments.allot("acme", parent.id, "child-1", Decimal(30), NOW).child
    stored = runtime.entitlements.get(parent.id)
    assert (stored.quantity, stored.renewal_quantity) == (Decimal(70), Decimal(70))
    assert (child.auto_renew, child.renewal_quantity) == (True, Decimal(30))
    later = NOW + timedelta(days=25)  # the next term
    assert runtime.balance.value("acme", "provider", "api_calls", later).quantity == Decimal(70)
    kid = runtime.balance.value("acme", "child-1", "api_calls", later)
    assert kid.quantity == Decimal(30)
    assert kid.balances[0].period_start == NOW + timedelta(days=20)


def test_children_keep_their_term_when_the_parent_is_voided(runtime: Runtime) -> None:
    parent = grant(runtime, "provider", quantity="100")
    child = runtime.allotments.allot("acme", parent.id, "child-1", Decimal(30), NOW).child
    runtime.catalog.void_entitlement(parent.id, NOW, reason="refund")
    assert runtime.entitlements.get(child.id).status == Status.ACTIVE.value
    assert value(runtime, "child-1").has_access


def test_fifty_racing_allotments_never_exceed_the_parent(runtime: Runtime) -> None:
    parent = grant(runtime, "provider", quantity="100")
    start = threading.Barrier(50)
    granted: list[Decimal] = []
    refused: list[Exception] = []

    def allot(n: int) -> None:
        start.wait()
        try:
            runtime.allotments.allot("acme", parent.id, f"child-{n}", Decimal(3), NOW)
            granted.append(Decimal(3))
        except ConflictError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=allot, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 33 and len(refused) == 17
    assert value(runtime, "provider").remaining == Decimal(1)
    assert runtime.allotments.allotted([parent.id]) == {parent.id: Decimal(99)}
    [period] = [p for p in runtime.usage.periods_of(parent.id)]
    assert period.quantity == Decimal(1)
