"""ingest/dimensions.lua, run alone through lupa, matches an event's data against an
entitlement's filters exactly as meterd.core.meters.matches does: JSON scalars of the
same kind (an integer filter never matches 2.0, true is not 1), read from the
record's text as event_records.record_json writes it."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.core.event_records import record_json
from meterd.core.meters import matches

from .lua_fragment import Fragment

WHEN = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
SEGMENTS = st.sampled_from(["a", "b", "model", "x-1", "zone_2"])
INTS = st.one_of(st.integers(-3, 3), st.integers(-(2**53) + 1, 2**53 - 1))
SCALARS = st.one_of(
    INTS,
    st.booleans(),
    st.sampled_from(["gpt", "eu", "1", "true", "", 'q"uote', "back\\slash", "é"]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([2.0, 1.0, -0.0, 0.0, 1e16, 3.5]),
    st.none(),
)
DATA = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(SEGMENTS, st.text(max_size=3)), inner, max_size=4),
    ),
    max_leaves=12,
).filter(lambda d: isinstance(d, dict)) | st.dictionaries(SEGMENTS, SCALARS, max_size=4)
FILTERS = st.dictionaries(
    st.lists(SEGMENTS, min_size=1, max_size=3).map(".".join),
    st.one_of(INTS, st.booleans(), st.sampled_from(["gpt", "eu", "1", "true", "é"])),
    max_size=3,
)

_index = count(1)


@pytest.fixture(scope="module")
def dims() -> Fragment:
    return Fragment("ingest/dimensions", ["dims_match", "literal_at"])


def lua_matches(dims: Fragment, data: dict[str, Any], filters: dict[str, Any]) -> bool:
    entry = dims.to_lua({"f": filters} if filters else {})
    record = record_json("c", "f", WHEN, WHEN, data)
    return bool(dims.dims_match(entry, next(_index), record))


def _with_the_filtered_values(data: dict[str, Any], filters: dict[str, Any]) -> dict[str, Any]:
    """Data that holds some filtered values (else random data rarely matches)."""
    out = dict(data)
    for path, value in list(filters.items())[::2]:
        segments = path.split(".")
        node = out
        for s in segments[:-1]:
            nxt = node.get(s)
            node[s] = nxt = dict(nxt) if isinstance(nxt, dict) else {}
            node = nxt
        node[segments[-1]] = value
    return out


@settings(max_examples=600, deadline=None)
@given(data=DATA, filters=FILTERS, plant=st.booleans())
def test_dimension_matching_agrees_with_meters_matches(
    dims: Fragment, data: dict[str, Any], filters: dict[str, Any], plant: bool
) -> None:
    if plant:
        data = _with_the_filtered_values(data, filters)
    assert lua_matches(dims, data, filters) == matches(data, filters)


@pytest.mark.parametrize(
    ("data", "filters", "expected"),
    [
        ({"n": 2}, {"n": 2}, True),
        ({"n": 2.0}, {"n": 2}, False),  # cjson reads 2.0 as 2: the record tells them apart
        ({"n": 2, "x": 0.5}, {"n": 2}, True),  # a float elsewhere in the record
        ({"u": {"n": 2.0}, "n": 2}, {"n": 2}, True),
        ({"u": {"n": 2.0}, "n": 2}, {"u.n": 2}, False),
        ({"n": True}, {"n": 1}, False),
        ({"n": 1}, {"n": True}, False),
        ({"s": "1"}, {"s": 1}, False),
        ({"a": {"b": [1, 2]}, "c": 3e0}, {"a.b": 1}, False),
        ({"k": 'q"uote', "n": 7, "f": 1.5}, {"n": 7}, True),
        ({}, {}, True),
    ],
)
def test_kinds_of_json_scalars_are_told_apart(
    dims: Fragment, data: dict[str, Any], filters: dict[str, Any], expected: bool
) -> None:
    assert matches(data, filters) is expected
    assert lua_matches(dims, data, filters) is expected


@pytest.mark.parametrize(
    ("record", "path", "literal"),
    [
        ('{"d":{"a":2.0}}', ["d", "a"], "2.0"),
        ('{"d":{"s":"x\\"y","a":{"b":[1,{"c":2}],"c":-3e5}}}', ["d", "a", "c"], "-3e5"),
        ('{"d":{"a":{}}}', ["d", "a", "b"], None),
        ('{"d":{"a":[1,2]}}', ["d", "a"], "[1,2]"),
    ],
)
def test_the_literal_scanner_finds_the_text_of_a_value(
    dims: Fragment, record: str, path: list[str], literal: str | None
) -> None:
    assert dims.literal_at(record, 1, dims.to_lua(path), 1) == literal
