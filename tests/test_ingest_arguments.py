"""How add_batch passes a batch to ingest.lua (issue 25): one argument an event, its
fields joined by a separator none of them can hold, and each customer's keys once in
KEYS (every key still declared there, as Redis Cluster needs), the event naming
their positions; before the events, the resolution entries and candidates the worker
gives (storage/resolution_cache.py), each once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

import pytest

from meterd.core.event_parsing import parse_event
from meterd.core.event_records import event_key
from meterd.core.events import InvalidEvent, UsageEvent
from meterd.core.meters import ITEM_SEPARATOR, item_id
from meterd.runtime import Runtime
from meterd.storage.counters import EVENT_FIELD_SEPARATOR, GIVEN_SEPARATOR, ScriptCode
from meterd.testing import event

from .conftest import NOW
from .helpers import grant

A = ScriptCode.ACCEPTED
FIXED = 9  # the call's own KEYS and ARGV, before the events' (and the given ones)


def parsed(*raw: dict[str, Any]) -> list[UsageEvent]:
    out = [parse_event(r, received_at=NOW) for r in raw]
    assert all(isinstance(e, UsageEvent) for e in out)
    return cast(list[UsageEvent], out)


@pytest.fixture
def unlimited(runtime: Runtime) -> Runtime:
    for customer in ("cust-1", "cust-2"):
        grant(runtime, customer, quantity=None, starts_at=NOW - timedelta(days=60), ends_at=None)
    return runtime


def split_args(args: list[str]) -> tuple[list[str], list[str], list[str]]:
    """ARGV after the call's own: (given entries, given candidates, events)."""
    raws, cands = args[FIXED], args[FIXED + 1]
    return (
        raws.split(GIVEN_SEPARATOR) if raws else [],
        cands.split(GIVEN_SEPARATOR) if cands else [],
        args[FIXED + 2 :],
    )


def sent_all(
    rt: Runtime, events: list[UsageEvent]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """The KEYS and ARGV add_batch passes for ``events`` (the script is not run): KEYS,
    the given entries, the given candidates and the events' arguments."""
    store = rt.counters
    seen: list[tuple[list[str], list[str]]] = []

    def record(*, keys: list[str], args: list[Any]) -> bytes:
        seen.append((list(keys), [str(a) for a in args]))
        return b"a" * len(split_args(seen[-1][1])[2])

    store._ingest = record  # type: ignore[assignment]
    store.add_batch(events, now=NOW)
    ((keys, args),) = seen
    return (keys, *split_args(args))


def sent(rt: Runtime, events: list[UsageEvent]) -> tuple[list[str], list[str]]:
    """KEYS and the events' ARGV."""
    keys, _, _, events_args = sent_all(rt, events)
    return keys, events_args


def test_a_customer_s_keys_are_passed_once_however_many_of_its_events(
    unlimited: Runtime,
) -> None:
    events = parsed(
        event("cust-1", event_id="e1"),
        event("cust-2", event_id="e2"),
        event("cust-1", event_id="e3"),
    )
    keys, args = sent(unlimited, events)
    rk = unlimited.redis_keys
    assert keys[FIXED:] == [
        rk.resolution("acme", "cust-1", "api_calls"),
        rk.used("acme", "cust-1"),
        rk.resolution("acme", "cust-2", "api_calls"),
        rk.used("acme", "cust-2"),
    ]
    named = [a.split(EVENT_FIELD_SEPARATOR)[:2] for a in args]
    assert named == [["10", "11"], ["12", "13"], ["10", "11"]]


def test_events_sharing_a_customer_s_keys_are_each_counted(unlimited: Runtime) -> None:
    events = parsed(
        event("cust-1", "2", event_id="e1"),
        event("cust-2", "5", event_id="e2"),
        event("cust-1", "3", event_id="e3"),
    )
    assert unlimited.counters.add_batch(events, now=NOW) == [A, A, A]
    rk = unlimited.redis_keys
    totals = {
        customer: sum(
            int(v)
            for f, v in unlimited.redis.hgetall(rk.used("acme", customer)).items()
            if b":" in f and not f.startswith((b"t:", b"h:"))
        )
        for customer in ("cust-1", "cust-2")
    }
    assert totals == {"cust-1": 5_000_000, "cust-2": 5_000_000}


def test_an_event_is_one_argument_of_twelve_fields(unlimited: Runtime) -> None:
    _, args = sent(unlimited, parsed(event(event_id="e1")))
    (packed,) = args
    fields = packed.split(EVENT_FIELD_SEPARATOR)
    assert len(fields) == 12
    assert fields[6] == event_key("acme", "tests", "e1")


def test_each_entry_and_candidate_is_given_once_and_named_by_the_events(
    unlimited: Runtime,
) -> None:
    events = parsed(
        event("cust-1", event_id="e1"),
        event("cust-2", event_id="e2"),
        event("cust-1", event_id="e3"),
    )
    rk = unlimited.redis_keys
    _, raws, cands, args = sent_all(unlimited, events)
    assert raws == [
        unlimited.redis.get(rk.resolution("acme", c, "api_calls")).decode()
        for c in ("cust-1", "cust-2")
    ]
    assert [c.split(EVENT_FIELD_SEPARATOR)[0] for c in cands] == ["1", "2"]
    assert [a.split(EVENT_FIELD_SEPARATOR)[10] for a in args] == ["1", "2", "1"]


def test_without_the_cache_nothing_is_given(unlimited: Runtime) -> None:
    unlimited.counters.resolution_cache = None
    _, raws, cands, args = sent_all(unlimited, parsed(event(event_id="e1")))
    assert (raws, cands) == ([], [])
    assert args[0].split(EVENT_FIELD_SEPARATOR)[10] == ""


def test_the_separator_is_not_the_meter_item_separator_so_an_item_counts(
    unlimited: Runtime,
) -> None:
    assert ITEM_SEPARATOR != EVENT_FIELD_SEPARATOR
    (one,) = parsed(event(event_id="e1"))
    item = replace(one, id=item_id("e1", "api_calls"))
    assert unlimited.counters.add_batch([item], now=NOW) == [A]


@pytest.mark.parametrize("where", ["id", "source", "customer"])
def test_no_valid_event_can_hold_the_separator(where: str) -> None:
    raw = event(**({"event_id": "a\x1db"} if where == "id" else {where: "a\x1db"}))
    assert isinstance(parse_event(raw, received_at=NOW), InvalidEvent)


def test_an_event_whose_field_holds_the_separator_is_refused_and_nothing_is_written(
    unlimited: Runtime,
) -> None:
    (one,) = parsed(event(event_id="e1"))
    smuggled = replace(one, id=f"e{EVENT_FIELD_SEPARATOR}1")  # past validation
    with pytest.raises(ValueError, match="separator"):
        unlimited.counters.add_batch([one, smuggled], now=NOW)
    assert unlimited.redis.hlen(unlimited.redis_keys.pending_events) == 0
