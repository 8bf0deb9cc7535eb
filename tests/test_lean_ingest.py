"""ingest.lua made leaner (issue 25) keeps every answer: a new marker generation starts
at its predecessor's size, the batch's markers and records are written once at the end
of the call (a key repeated within the call still finds its first copy), and the
worker passes each event's pending-record prefix."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lupa import lua51

from meterd.core.event_parsing import parse_event
from meterd.core.event_records import event_key, parse_pending_record
from meterd.core.events import UsageEvent
from meterd.core.timeutil import epoch_micros
from meterd.lua import script_source
from meterd.runtime import Runtime
from meterd.storage.counters import CounterStore, ScriptCode
from meterd.testing import event

from .conftest import NOW
from .helpers import grant

A, D, C = ScriptCode.ACCEPTED, ScriptCode.DUPLICATE, ScriptCode.CONFLICT
GENERATION = timedelta(hours=6)  # the default hot window (24 h) over 4 generations
MAX_EXACT = 2**53 - 1


def parsed(*raw: dict) -> list[UsageEvent]:  # type: ignore[type-arg]
    out = [parse_event(r, received_at=NOW) for r in raw]
    assert all(isinstance(e, UsageEvent) for e in out)
    return cast(list[UsageEvent], out)


def generation_meta(rt: Runtime, when: object) -> tuple[int, int, int]:
    store = rt.counters
    g = epoch_micros(when) // store._generation_us  # type: ignore[arg-type]
    level, split, count = rt.redis.hmget(rt.redis_keys.marker_generation(g), ["L", "p", "n"])
    return int(level or 0), int(split or 0), int(count or 0)


@pytest.fixture
def unlimited(runtime: Runtime) -> Runtime:
    grant(runtime, quantity=None, starts_at=NOW - timedelta(days=60), ends_at=None)
    return runtime


# -- int_str ------------------------------------------------------------------


@pytest.fixture(scope="module")
def lua() -> lua51.LuaRuntime:
    runtime = lua51.LuaRuntime()
    runtime.execute(script_source("ingest/util") + "\nINT_STR = int_str")
    return runtime


@pytest.mark.parametrize(
    "n", [0, 1, -1, 2**52, -(2**52), MAX_EXACT, -MAX_EXACT, 1_764_000_000_000_000]
)
def test_int_str_writes_the_text_percent_0f_wrote_for_an_exact_integer(
    lua: lua51.LuaRuntime, n: int
) -> None:
    old = lua.eval(f'string.format("%.0f", {float(n)!r})')
    assert lua.globals().INT_STR(float(n)) == old == str(n)


@given(st.integers(-MAX_EXACT, MAX_EXACT))
def test_int_str_is_the_decimal_text_of_every_integer_a_double_holds_exactly(n: int) -> None:
    runtime = lua51.LuaRuntime()
    runtime.execute(script_source("ingest/util") + "\nINT_STR = int_str")
    assert runtime.globals().INT_STR(float(n)) == str(n)


# -- marker generations -------------------------------------------------------


def test_a_new_marker_generation_starts_at_the_size_its_predecessor_reached(
    unlimited: Runtime,
) -> None:
    first = [event(event_id=f"o{i}") for i in range(500)]
    unlimited.ingest.ingest(first, now=NOW)
    grown = generation_meta(unlimited, NOW)
    assert grown[:2] != (0, 0)  # 500 markers split the first generation
    later = NOW + GENERATION
    unlimited.ingest.ingest([event(event_id="n0", time=later)], now=later)
    assert generation_meta(unlimited, later) == (*grown[:2], 1)


def test_markers_in_a_presized_generation_and_its_predecessor_answer_duplicate(
    unlimited: Runtime,
) -> None:
    unlimited.ingest.ingest([event(event_id=f"o{i}") for i in range(500)], now=NOW)
    later = NOW + GENERATION
    new = [event(event_id=f"n{i}", time=later) for i in range(300)]
    unlimited.ingest.ingest(new, now=later)
    codes = unlimited.counters.add_batch(
        parsed(event(event_id="o7"), event(event_id="n7", time=later)), now=later
    )
    assert codes == [D, D]


def test_a_marker_generation_after_a_gap_starts_small(unlimited: Runtime) -> None:
    unlimited.ingest.ingest([event(event_id=f"o{i}") for i in range(500)], now=NOW)
    later = NOW + 2 * GENERATION  # its predecessor holds nothing
    unlimited.ingest.ingest([event(event_id="n0", time=later)], now=later)
    assert generation_meta(unlimited, later) == (0, 0, 1)


# -- markers and records written once a call -----------------------------------


def test_an_event_repeated_within_one_call_is_counted_once(unlimited: Runtime) -> None:
    twice = parsed(event(event_id="e1"), event(event_id="e2"), event(event_id="e1"))
    assert unlimited.counters.add_batch(twice, now=NOW) == [A, A, D]
    assert unlimited.redis.hlen(unlimited.redis_keys.pending_events) == 2


def test_a_reservation_key_repeated_within_one_call_with_another_quantity_conflicts(
    runtime: Runtime,
) -> None:
    grant(runtime, quantity="100")
    same = parsed(event(event_id="r1", quantity="2"), event(event_id="r1", quantity="2"))
    other = parsed(event(event_id="r2", quantity="2"), event(event_id="r2", quantity="3"))
    assert runtime.counters.add_batch(same, now=NOW, strict=True) == [A, D]
    assert runtime.counters.add_batch(other, now=NOW, strict=True) == [A, C]


def test_an_event_repeated_within_a_confirmed_call_is_counted_once(unlimited: Runtime) -> None:
    store: CounterStore = unlimited.counters
    twice = parsed(event(event_id="e1"), event(event_id="e1"))
    assert store.add_batch(twice, now=NOW, confirmed_seq=store.flush_seq()) == [A, D]


def test_a_call_of_more_events_than_one_hset_takes_keeps_every_record(
    unlimited: Runtime,
) -> None:
    many = parsed(*(event(event_id=f"m{i}") for i in range(1_200)))
    assert set(unlimited.counters.add_batch(many, now=NOW)) == {A}
    assert unlimited.redis.hlen(unlimited.redis_keys.pending_events) == 1_200
    assert unlimited.counters.marker_figures().markers == 1_200


class SetsOnly:
    """Just the Redis commands ingest/markers calls, over Python sets; it remembers
    the most members any set ever held."""

    def __init__(self) -> None:
        self.sets: dict[str, set[str]] = {}
        self.largest = 0

    def call(self, command: str, key: str, *args: str) -> object:
        members = self.sets.setdefault(key, set())
        if command == "HMGET":
            return self.lua.table_from([False] * len(args))
        if command == "SISMEMBER":
            return int(args[0] in members)
        if command == "SADD":
            before = len(members)
            members.update(args)
            self.largest = max(self.largest, len(members))
            return len(members) - before
        if command == "SMEMBERS":
            return self.lua.table_from(sorted(members))
        if command == "SMOVE":
            members.discard(args[1])
            self.sets.setdefault(args[0], set()).add(args[1])
            return 1
        raise AssertionError(command)


def test_no_marker_set_ever_passes_the_intset_limit_however_large_the_call() -> None:
    # Redis keeps a set of integers as an intset (8 bytes a marker) up to 512 members,
    # and never converts it back: no set may pass 512 at any moment of a call.
    fake = SetsOnly()
    lua = lua51.LuaRuntime()
    fake.lua = lua  # type: ignore[attr-defined]
    lua.globals().redis = lua.table_from({"call": fake.call})
    lua.execute(
        "now_us, hot_us, generation_us = 1e15, 864e8, 216e8\n"
        'marker_prefix, generations_key = "p:dm:", "p:dm:generations"\n'
        + script_source("ingest/markers")
        + "\nADD, WRITE = add_marker, write_markers"
    )
    rng = random.Random(25)
    for _ in range(3_000):
        digest = rng.randrange(2**52)
        lua.globals().ADD(float(digest), str(digest))
    lua.globals().WRITE()
    assert sum(len(s) for s in fake.sets.values()) == 3_000
    assert fake.largest <= 512


def test_the_pending_record_is_the_workers_prefix_and_the_allocation(
    unlimited: Runtime,
) -> None:
    [e] = parsed(event(event_id="p1", quantity="3"))
    assert unlimited.counters.add_batch([e], now=NOW) == [A]
    key = event_key(e.org, e.source, e.id)
    raw = unlimited.redis.hget(unlimited.redis_keys.pending_events, key)
    assert raw is not None
    record = parse_pending_record(key, raw.decode())
    assert (record.units, record.target, record.customer) == (e.units, None, e.customer)
    assert sum(a.units for a in record.allocations) == e.units
