"""The candidate the worker gives ingest.lua (storage/resolution_cache.py, issue 25):
for an entry and event of the common shape it is what ingest/status.lua's in_window
and ingest/periods.lua's period_of give, outside that shape there is none, the
cache is bounded, and a stale copy never changes a count (the script checks the
entry's text)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.core.domain import Aggregation
from meterd.core.event_parsing import parse_event
from meterd.core.events import UsageEvent
from meterd.core.holds import HoldOp
from meterd.runtime import Runtime
from meterd.storage.counters import GIVEN_SEPARATOR, CounterStore, ScriptCode
from meterd.storage.resolution_cache import (
    MAX_ENTRIES,
    ResolutionCache,
    candidate,
    fast_entry,
)
from meterd.testing import event

from .conftest import NOW
from .helpers import grant
from .lua_fragment import Fragment

A = ScriptCode.ACCEPTED
OPEN = -1
T0 = 1_790_000_000_000_000
HOUR = 3_600_000_000
IDS = ["a" * 32, "b" * 32]


@pytest.fixture(scope="module")
def status() -> Fragment:
    return Fragment("ingest/status", ["in_window"])


@pytest.fixture(scope="module")
def periods() -> Fragment:
    return Fragment("ingest/periods", ["period_of"])


instants = st.integers(-50, 50).map(lambda h: T0 + h * HOUR)
ends = st.one_of(st.just(OPEN), instants)


@st.composite
def stored_periods(draw: st.DrawFn) -> list[list[Any]]:
    out = []
    for _ in range(draw(st.integers(0, 4))):
        start = draw(instants)
        length = draw(st.one_of(st.just(None), st.integers(1, 30)))
        end = OPEN if length is None else start + length * HOUR
        limit = draw(st.integers(-1, 10**15))
        out.append([start, end, limit, f"{IDS[0]}:{start}:{len(out)}"])
    return out


@st.composite
def fast_shaped(draw: st.DrawFn) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "i": IDS[0],
        "s": draw(instants),
        "u": draw(ends),
        "e": -1,
        "g": -1,
        "b": draw(st.sampled_from(["P", "U"])),
        "q": draw(st.integers(-1, 10**15)),
        "p": draw(stored_periods()),
        "z": -1,
        "k": 6,
    }
    if draw(st.booleans()):  # renewing: period_of's later branches, never the first
        entry["r"] = ["d", 24 * HOUR, T0, 5]
    return entry


def in_first_branch(entry: dict[str, Any], ts: int) -> bool:
    """The spec, said plainly: ts lies in the stored period with the greatest start
    at or before it (the first listed of equal starts)."""
    before = [p for p in entry["p"] if p[0] <= ts]
    if not before:
        return False
    top = max(p[0] for p in before)
    chosen = next(p for p in before if p[0] == top)
    return bool(chosen[1] == OPEN or ts < chosen[1])


@settings(max_examples=400, deadline=None)
@given(entry=fast_shaped(), ts=instants, target=st.sampled_from(["", IDS[0], IDS[1]]))
def test_the_candidate_is_what_lua_chooses(
    status: Fragment, periods: Fragment, entry: dict[str, Any], ts: int, target: str
) -> None:
    raw = json.dumps([entry])
    fast = fast_entry(raw)
    assert fast is not None
    month = T0 - 7 * HOUR  # any text: the month is only named in a pay-per-use field
    got = candidate(fast, ts, month, target)
    e = status.to_lua(json.loads(raw)[0])
    usable = (target in ("", entry["i"])) and bool(status.in_window(e, float(ts)))
    if usable and (entry["b"] == "U" or in_first_branch(entry, ts)):
        assert got is not None
        field, limit, prepaid, _ = periods.period_of(periods.to_lua(entry), float(ts), str(month))
        assert got == (field, int(limit), prepaid)
    else:
        assert got is None


others = st.sampled_from(
    [
        {"f": {"region": "eu"}},
        {"x": [[T0, OPEN]]},
        {"o": [0, 0, {}]},
        {"a": [["80", "P", 800000]]},
    ]
)


@given(entry=fast_shaped(), extra=others)
def test_an_entry_with_filters_suspensions_rollover_or_rules_gives_none(
    entry: dict[str, Any], extra: dict[str, Any]
) -> None:
    assert fast_entry(json.dumps([{**entry, **extra}])) is None


@given(first=fast_shaped(), second=fast_shaped())
def test_an_entry_of_two_entitlements_gives_none(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    assert fast_entry(json.dumps([first, {**second, "i": IDS[1]}])) is None
    assert fast_entry(json.dumps([])) is None


def test_the_cache_keeps_at_most_its_bound_and_the_latest_used() -> None:
    raw = json.dumps([{"i": IDS[0], "s": 0, "u": OPEN, "b": "U", "q": -1, "p": []}])
    cache = ResolutionCache()
    keys = [f"k{i}" for i in range(MAX_ENTRIES + 50)]
    fetched: list[str] = []

    def fetch(wanted: Any) -> list[bytes]:
        fetched.extend(wanted)
        return [raw.encode()] * len(wanted)

    for i in range(0, len(keys), 100):
        cache.lookup(keys[i : i + 100], fetch)
    assert len(cache) == MAX_ENTRIES
    fetched.clear()
    assert set(cache.lookup(keys[-10:], fetch)) == set(keys[-10:])
    assert fetched == []  # kept: no fetch
    cache.lookup(keys[:1], fetch)
    assert fetched == keys[:1]  # the oldest went first


def test_an_expired_entry_is_fetched_again() -> None:
    now = [0.0]
    cache = ResolutionCache(ttl=5.0, clock=lambda: now[0])
    raws = iter([b"[]", b"[]"])
    calls: list[list[str]] = []

    def fetch(wanted: Any) -> list[bytes]:
        calls.append(list(wanted))
        return [next(raws)]

    cache.lookup(["k"], fetch)
    now[0] = 4.9
    cache.lookup(["k"], fetch)
    now[0] = 5.0
    cache.lookup(["k"], fetch)
    assert calls == [["k"], ["k"]]


# -- through Redis -------------------------------------------------------------


def parsed(*raw: dict[str, Any]) -> list[UsageEvent]:
    out = [parse_event(r, received_at=NOW) for r in raw]
    assert all(isinstance(e, UsageEvent) for e in out)
    return cast(list[UsageEvent], out)


def used_by_entitlement(rt: Runtime, customer: str = "cust-1") -> dict[str, int]:
    raw = rt.redis.hgetall(rt.redis_keys.used("acme", customer))
    out: dict[str, int] = {}
    for f, v in raw.items():
        name = f.decode()
        if ":" in name and not name.startswith(("t:", "h:", "v:")):
            ident = name.split(":")[0]
            out[ident] = out.get(ident, 0) + int(v)
    return out


def given_count(store: CounterStore, events: list[UsageEvent]) -> int:
    """How many candidates add_batch gives for ``events`` (the script is not run)."""
    real = store._ingest
    seen: list[list[Any]] = []

    def record(*, keys: list[str], args: list[Any]) -> bytes:
        seen.append(list(args))
        return b"a" * len(events)

    store._ingest = record  # type: ignore[assignment]
    try:
        store.add_batch(events, now=NOW)
    finally:
        store._ingest = real
    cands = seen[0][10]
    return len(cands.split(GIVEN_SEPARATOR)) if cands else 0


def test_a_stale_copy_counts_on_what_the_new_entry_says(runtime: Runtime) -> None:
    store: CounterStore = runtime.counters
    assert store.resolution_cache is not None
    first = grant(runtime, quantity="100")
    assert store.add_batch(parsed(event(event_id="e1")), now=NOW) == [A]
    stale = dict(store.resolution_cache._entries)
    assert len(stale) == 1
    # a second grant that burns first (it ends sooner): the entry changes in Redis,
    # while this worker's copy (as another process's would) still holds the old one
    second = grant(runtime, quantity="100", ends_at=NOW + timedelta(days=5))
    store.resolution_cache._entries.update(stale)
    ((_raw, fast, _),) = stale.values()
    assert fast is not None and fast[0] == first.id.hex
    assert given_count(store, parsed(event(event_id="e2"))) == 1  # the old candidate
    assert store.add_batch(parsed(event("cust-1", "3", event_id="e2")), now=NOW) == [A]
    assert used_by_entitlement(runtime) == {first.id.hex: 1_000_000, second.id.hex: 3_000_000}


def test_a_stale_copy_of_an_entry_since_replaced_counts_on_the_new_one(runtime: Runtime) -> None:
    store: CounterStore = runtime.counters
    assert store.resolution_cache is not None
    first = grant(runtime, quantity="100")
    assert store.add_batch(parsed(event(event_id="e1")), now=NOW) == [A]
    key = runtime.redis_keys.resolution("acme", "cust-1", "api_calls")
    old = runtime.redis.get(key).decode()
    other = "c" * 32
    runtime.redis.set(key, old.replace(first.id.hex, other))  # not through this store
    assert store.add_batch(parsed(event("cust-1", "2", event_id="e2")), now=NOW) == [A]
    assert used_by_entitlement(runtime) == {first.id.hex: 1_000_000, other: 2_000_000}


def test_the_common_event_is_given_its_candidate_and_counted_the_same(
    runtime: Runtime,
) -> None:
    grant(runtime, quantity="5")
    events = parsed(*(event(event_id=f"e{i}", quantity="2") for i in range(4)))
    store: CounterStore = runtime.counters
    assert given_count(store, events) == 1
    assert store.add_batch(events, now=NOW) == [A] * 4
    (units,) = used_by_entitlement(runtime).values()
    assert units == 8_000_000  # overage on the one PRE_PAID period
    field = next(
        f.decode()
        for f in runtime.redis.hkeys(runtime.redis_keys.pending)
        if f.startswith(b"n:") and f.endswith(b":100")
    )
    assert field  # the 100 % crossing, judged on the given limit


@pytest.mark.parametrize("shape", ["max", "unique", "hold"])
def test_no_candidate_for_an_event_outside_the_shape(runtime: Runtime, shape: str) -> None:
    grant(runtime, quantity="5")
    (one,) = parsed(event(event_id="e1"))
    assert given_count(runtime.counters, [one]) == 1
    if shape == "max":
        other = replace(one, aggregation=Aggregation.MAX)
    elif shape == "unique":
        other = replace(one, aggregation=Aggregation.UNIQUE_COUNT, unique_value='"v"')
    else:
        other = replace(one, hold=HoldOp(kind="settle", hold_id=uuid.UUID(int=1)))
    assert given_count(runtime.counters, [other]) == 0
