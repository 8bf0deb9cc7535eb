"""ingest.lua counts with the rolled-over limit (lua/ingest/rollover.lua wired in
ingest/resolve.lua): on an entry with rollover (``"o"`` in the resolution data),
the room of a renewed term is its renewal quantity plus what the term before left
(up to ``rollover_max``), and a late event into the term before, counted first,
shrinks it, in the same batch or a later one. Python's ``lifecycle.limit_units``
on the live totals gives the same limit."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from meterd.core.domain import BillingType, EntitlementView, Period, Renewal, Status
from meterd.core.events import UsageEvent
from meterd.core.lifecycle import limit_units, period_at
from meterd.core.redis_keys import period_field
from meterd.core.terms import Term
from meterd.runtime import Runtime
from meterd.storage.counters import ScriptCode
from meterd.storage.resolution import encode_resolution

from .conftest import NOW

ANCHOR = datetime(2026, 10, 10, tzinfo=UTC)  # term 0 to Nov 10, term 1 holds NOW
TERM = Term(months=1)
IN_TERM_0 = datetime(2026, 11, 1, tzinfo=UTC)  # a late event: within the late window
IN_TERM_1 = NOW - timedelta(hours=1)


def setup(rt: Runtime) -> tuple[str, EntitlementView]:
    view = EntitlementView(
        id=uuid.uuid4(),
        number=1,
        priority=0,
        status=Status.ACTIVE,
        billing_type=BillingType.PRE_PAID,
        quantity=Decimal(100),
        starts_at=ANCHOR,
        ends_at=TERM.start(ANCHOR, 1),
        grace_until=None,
        periods=(Period(ANCHOR, TERM.start(ANCHOR, 1), Decimal(100)),),
        renewal=Renewal(ANCHOR, TERM, Decimal(100), rollover_max=Decimal(50)),
        scale=0,
    )
    customer = f"c-{uuid.uuid4().hex[:8]}"
    entry = encode_resolution([view], near=NOW)
    rt.counters.store_resolutions([("acme", customer, "api_calls", entry, 60, {})], replace=True)
    return customer, view


def usage(customer: str, at: datetime, units: int, scale: int = 0) -> UsageEvent:
    return UsageEvent(
        org="acme", customer=customer, feature="api_calls", source="t",
        id=uuid.uuid4().hex, time=at, quantity=Decimal(units), entitlement_id=None, scale=scale,
    )  # fmt: skip


def adder(rt: Runtime) -> Callable[..., list[ScriptCode]]:
    """add_batch, the event log searched (nothing in it: events older than the hot
    window are confirmed new)."""

    def add(events: list[UsageEvent], *, now: datetime, strict: bool = False) -> list[ScriptCode]:
        seq = rt.counters.flush_seq()
        return rt.counters.add_batch(events, now=now, strict=strict, confirmed_seq=seq)

    return add


def python_limit(rt: Runtime, customer: str, view: EntitlementView) -> int:
    period = period_at(view, IN_TERM_1)
    assert period is not None
    fields = [period_field(view.id, TERM.start(ANCHOR, k)) for k in (0, 1)]
    live = rt.counters.live_totals("acme", customer, fields)
    return limit_units(view, period, lambda p: live.get(period_field(view.id, p.start), 0))


def test_the_renewed_term_has_the_room_the_term_before_left(runtime: Runtime) -> None:
    customer, view = setup(runtime)
    add = adder(runtime)
    assert add([usage(customer, IN_TERM_0, 70)], now=NOW) == [ScriptCode.ACCEPTED]
    # 100 + MIN(50, 100 - 70) = 130
    assert python_limit(runtime, customer, view) == 130
    assert add([usage(customer, IN_TERM_1, 131)], now=NOW, strict=True) == [ScriptCode.NO_ROOM]
    assert add([usage(customer, IN_TERM_1, 130)], now=NOW, strict=True) == [ScriptCode.ACCEPTED]
    assert add([usage(customer, IN_TERM_1, 1)], now=NOW, strict=True) == [ScriptCode.NO_ROOM]


def test_at_most_rollover_max_carries(runtime: Runtime) -> None:
    customer, view = setup(runtime)
    add = adder(runtime)
    assert python_limit(runtime, customer, view) == 150  # nothing used: 100 + MIN(50, 100)
    assert add([usage(customer, IN_TERM_1, 151)], now=NOW, strict=True) == [ScriptCode.NO_ROOM]
    assert add([usage(customer, IN_TERM_1, 150)], now=NOW, strict=True) == [ScriptCode.ACCEPTED]


def test_a_late_event_into_the_term_before_shrinks_the_carry(runtime: Runtime) -> None:
    customer, view = setup(runtime)
    add = adder(runtime)
    assert add([usage(customer, IN_TERM_0, 70)], now=NOW) == [ScriptCode.ACCEPTED]
    assert add([usage(customer, IN_TERM_0, 20)], now=NOW) == [ScriptCode.ACCEPTED]  # late
    assert python_limit(runtime, customer, view) == 110  # 100 + MIN(50, 100 - 90)
    assert add([usage(customer, IN_TERM_1, 111)], now=NOW, strict=True) == [ScriptCode.NO_ROOM]
    assert add([usage(customer, IN_TERM_1, 105)], now=NOW, strict=True) == [ScriptCode.ACCEPTED]
    # in one batch: the late event is counted first and takes the last 5 of the carry,
    # so the reservation after it finds no room (without it, 5 would be left)
    late, ask = usage(customer, IN_TERM_0, 10), usage(customer, IN_TERM_1, 5)
    assert add([late, ask], now=NOW, strict=True) == [ScriptCode.ACCEPTED, ScriptCode.NO_ROOM]
    assert python_limit(runtime, customer, view) == 100
    # term 1 is over its limit now (105 of 100): overage, as when any limit falls
    assert add([usage(customer, IN_TERM_1, 1)], now=NOW, strict=True) == [ScriptCode.NO_ROOM]
