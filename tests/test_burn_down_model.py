"""The Lua burn-down agrees with a plain Python model of the rules, for any mix of
entitlements and events (hypothesis)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterd.core.quantity import to_micros
from meterd.runtime import Runtime
from meterd.testing import event

from .conftest import NOW
from .helpers import grant

entitlement_specs = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 50)),  # quantity (None = unlimited)
        st.integers(0, 2),  # priority
        st.integers(1, 60),  # ends in N days
    ),
    min_size=1,
    max_size=4,
)
quantities = st.lists(st.sampled_from(["1", "0.5", "3", "7.25", "0.000001", "20"]), max_size=25)


def reference_burn_down(limits: list[int | None], order: list[int], events: list[int]) -> list[int]:
    """Each event fills the entitlements in burn-down order; the rest goes on the last."""
    used = [0] * len(limits)
    for qty in events:
        left = qty
        for position, i in enumerate(order):
            last = position == len(order) - 1
            limit = limits[i]
            take = left if last or limit is None else min(left, max(limit - used[i], 0))
            used[i] += take
            left -= take
            if left == 0:
                break
    return used


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=entitlement_specs, events=quantities)
def test_lua_burn_down_matches_the_reference_model(
    runtime: Runtime, specs: list[tuple[int | None, int, int]], events: list[str]
) -> None:
    customer = f"c-{uuid.uuid4().hex}"
    ents = [
        grant(
            runtime,
            customer,
            None if qty is None else str(qty),
            priority=priority,
            ends_at=NOW + timedelta(days=days),
        )
        for qty, priority, days in specs
    ]
    payloads = [
        event(customer=customer, event_id=f"{customer}-{i}", quantity=q)
        for i, q in enumerate(events)
    ]
    runtime.ingest.ingest(payloads, now=NOW)

    limits = [None if e.quantity is None else to_micros(e.quantity) for e in ents]
    order = sorted(
        range(len(ents)), key=lambda i: (ents[i].priority, ents[i].ends_at, ents[i].number)
    )
    expected = reference_burn_down(limits, order, [to_micros(Decimal(q)) for q in events])
    live = {
        b.entitlement_id: b.consumed
        for b in runtime.balance.balances("acme", customer, "api_calls", NOW)
    }
    assert [to_micros(live[e.id]) for e in ents] == expected
