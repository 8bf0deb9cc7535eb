"""Resolution data stored flat (issue 25): the common shape is written as flat text,
which the ingest script reads cheaper than JSON; every other shape stays JSON, and the
first byte tells them apart, so entries written as JSON by an earlier version (every
entry of b6213b7) are still read, in Python and in Lua, counted and re-armed."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from lupa import lua51

from meterd.core.domain import BillingType, EntitlementView, Period, Status
from meterd.core.events import UsageEvent
from meterd.core.redis_keys import period_field
from meterd.runtime import Runtime
from meterd.storage.counters import ScriptCode
from meterd.storage.resolution import (
    decode_entries,
    decode_resolution,
    encode_entries,
    encode_resolution,
    encode_view,
)

from .conftest import NOW
from .lua_fragment import Fragment
from .test_lua_status import offsets, views

EXACT = 2**53 - 1
numbers = st.integers(-EXACT, EXACT)


@st.composite
def flat_entries(draw: st.DrawFn) -> dict[str, Any]:
    """An entry of the common shape, with any integers a double holds exactly."""
    ent = uuid.UUID(int=draw(st.integers(0, 2**128 - 1))).hex
    entry: dict[str, Any] = {
        "i": ent,
        "s": draw(numbers),
        "u": draw(numbers),
        "e": draw(numbers),
        "g": draw(numbers),
        "b": draw(st.sampled_from("PU")),
        "q": draw(numbers),
        "p": [
            [start, draw(numbers), draw(numbers), f"{ent}:{start}"]
            for start in draw(st.lists(numbers, max_size=4))
        ],
        "z": draw(numbers),
        "k": draw(st.integers(0, 6)),
    }
    renewal = draw(
        st.none()
        | st.tuples(st.just("m"), numbers, numbers, numbers, numbers, numbers).map(list)
        | st.tuples(st.just("d"), numbers, numbers, numbers).map(list)
    )
    if renewal is not None:
        entry["r"] = renewal
    return entry


def plain(value: Any) -> Any:
    """A Lua value (or a JSON-like one) with tables as lists or dicts and every
    number a float, so the two readers' results compare."""
    if lua51.lua_type(value) == "table":
        items = dict(value.items())
        if all(isinstance(k, int | float) for k in items) and sorted(items) == list(
            range(1, len(items) + 1)
        ):
            return [plain(items[k]) for k in sorted(items)]
        return {k: plain(v) for k, v in items.items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def reader() -> Fragment:
    return Fragment("ingest/resolution", ["decode_resolution"])


# -- Python --------------------------------------------------------------------


@given(st.lists(flat_entries(), min_size=1, max_size=3))
def test_entries_of_the_common_shape_are_stored_flat_and_read_back_equal(
    entries: list[dict[str, Any]],
) -> None:
    text = encode_entries(entries)
    assert text.startswith("F")
    assert decode_entries(text) == entries


@settings(max_examples=200, deadline=None)
@given(view=views(), moment=offsets)
def test_a_view_reads_back_the_same_from_the_flat_form_and_from_json(
    view: EntitlementView, moment: Any
) -> None:
    common = replace(view, suspensions=())
    entry = encode_view(common, near=moment)
    flat = encode_resolution([common], near=moment)
    assert flat.startswith("F")
    assert decode_resolution(flat) == decode_resolution(json.dumps([entry]))


@given(view=views())
def test_an_entry_with_suspensions_filters_or_rules_stays_json(view: EntitlementView) -> None:
    for other in (
        replace(view, suspensions=((NOW, None),)),
        replace(view, suspensions=(), filters={"region": "eu"}),
        replace(view, suspensions=(), alert_rules=(("r1", "C", 5),)),
    ):
        text = encode_resolution([other])
        assert text.startswith("[")
        assert json.loads(text) == [encode_view(other)]


# -- Lua -----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(flat_entries(), min_size=1, max_size=3))
def test_the_script_reads_a_flat_entry_as_cjson_reads_its_json(
    entries: list[dict[str, Any]],
) -> None:
    lua = reader()
    from_flat = plain(lua.decode_resolution(encode_entries(entries)))
    from_json = plain(lua.decode_resolution(json.dumps(entries, separators=(",", ":"))))
    assert from_flat == from_json == plain(entries)


# -- the running version's JSON, in place --------------------------------------


def old_encode(views: list[EntitlementView]) -> str:
    """What b6213b7 stored: every entry as JSON (its encode_resolution)."""
    return json.dumps([encode_view(v, near=NOW) for v in views], separators=(",", ":"))


def prepaid(quantity: int = 100) -> EntitlementView:
    start = NOW - timedelta(days=10)
    return EntitlementView(
        id=uuid.uuid4(),
        number=1,
        priority=0,
        status=Status.ACTIVE,
        billing_type=BillingType.PRE_PAID,
        quantity=Decimal(quantity),
        starts_at=start,
        ends_at=NOW + timedelta(days=20),
        grace_until=None,
        periods=(Period(start, NOW + timedelta(days=20), Decimal(quantity)),),
        renewal=None,
        suspensions=(),
        terminated_at=None,
        scale=0,
    )


def test_json_data_stored_by_the_running_version_still_counts(runtime: Runtime) -> None:
    view = prepaid()
    runtime.counters.store_resolutions(
        [("acme", "old", "api_calls", old_encode([view]), 60, {})], replace=True
    )
    usage = UsageEvent(
        org="acme", customer="old", feature="api_calls", source="t", id="u1", time=NOW,
        quantity=Decimal(3), entitlement_id=None, scale=0,
    )  # fmt: skip
    assert runtime.counters.add_batch([usage], now=NOW) == [ScriptCode.ACCEPTED]
    field = period_field(view.id, view.periods[0].start)
    assert runtime.counters.pending_fields()[field] == 3


def test_json_data_stored_by_the_running_version_still_reads_in_python(
    runtime: Runtime,
) -> None:
    view = prepaid()
    runtime.redis.set(runtime.redis_keys.resolution("acme", "old", "api_calls"), old_encode([view]))
    raw = runtime.counters.resolution_entry("acme", "old", "api_calls")
    assert raw is not None
    (back,) = decode_resolution(raw)
    assert (back.id, back.quantity, back.periods[0].start) == (
        view.id,
        view.quantity,
        view.periods[0].start,
    )


def test_new_data_is_stored_flat_and_counts(runtime: Runtime) -> None:
    view = prepaid()
    entry = encode_resolution([view], near=NOW)
    runtime.counters.store_resolutions([("acme", "new", "api_calls", entry, 60, {})], replace=True)
    stored = runtime.redis.get(runtime.redis_keys.resolution("acme", "new", "api_calls"))
    assert stored is not None and stored.startswith(b"F")
    usage = UsageEvent(
        org="acme", customer="new", feature="api_calls", source="t", id="u1", time=NOW,
        quantity=Decimal(3), entitlement_id=None, scale=0,
    )  # fmt: skip
    assert runtime.counters.add_batch([usage], now=NOW) == [ScriptCode.ACCEPTED]
    assert runtime.counters.pending_fields()[period_field(view.id, view.periods[0].start)] == 3
