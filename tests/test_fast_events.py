"""The fast path of event parsing (``core.fast_events``) agrees with the full model.

Every input, valid or not, near the common shape or far from it: the fast path
either builds exactly what the model builds, or declines; ``parse_event`` (fast
path first) answers exactly as the model alone does, invalid events with the same
reason.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterd.core.event_parsing import parse_event
from meterd.core.events import (
    InvalidEvent,
    RawEvent,
    UsageEvent,
    new_raw_event,
    new_usage_event,
    parse_event_by_model,
)
from meterd.core.fast_events import fast_event
from meterd.core.quantity import JsonNumber
from meterd.testing import event

from .conftest import NOW

MISSING = object()

#: Text near the rules' edges: printable ASCII, controls, a final newline, other
#: scripts, a lone surrogate, lengths around each limit.
_ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=12)
_ODD = st.text(
    st.sampled_from(["a", "\n", "\x00", "\x1f", "\x7f", "\x80", "é", "€", "\ud800", " ", "/"]),
    max_size=6,
)
_TEXT = st.one_of(
    _ASCII,
    _ASCII.map(lambda t: t + "\n"),
    _ODD,
    st.sampled_from(["", "x" * 128, "x" * 129, "x" * 512, "x" * 513]),
    st.text(max_size=8),
)
_KEYS = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    st.sampled_from(["acme", "api_calls", "x" * 64, "x" * 65, "acme\n", "ac me", "ácme", ""]),
    _ODD,
)
_TYPES = st.one_of(
    st.just("meterd.usage"),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,20}", fullmatch=True),
    st.sampled_from(["llm.request", "meterd.usage\n", "-bad", "a" * 128, "a" * 129, ""]),
)
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), _TEXT)
_NOT_TEXT = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.just(b"x"),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(_ASCII, st.integers(), max_size=2),
)


def _times() -> st.SearchStrategy[Any]:
    offsets = st.sampled_from(["Z", "+00:00", "-00:00", "+05:30", "-23:59", "+23:59", "+24:00"])
    moments = st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
    )

    def rfc3339(moment: datetime, offset: str, digits: int) -> str:
        base = moment.isoformat(timespec="seconds")
        fraction = f".{moment.microsecond:06d}"[: digits + 1] if digits else ""
        return base + fraction + offset

    text = st.builds(rfc3339, moments, offsets, st.integers(0, 7))
    odd = st.sampled_from(
        [
            "2026-11-22t10:00:00z",
            "2026-11-22 10:00:00Z",
            "2026-11-22T10:00:00",
            "2026-02-30T10:00:00Z",
            "2026-11-22T10:00:60Z",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:30:00-01:00",
            "1700000000",
            "1970-01-01T00:00:00Z",
            "",
        ]
    )
    return st.one_of(text, odd, st.integers(), st.none())


def _quantities() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.from_regex(r"[0-9]{1,20}(\.[0-9]{1,8})?", fullmatch=True),
        st.integers(min_value=-5, max_value=2**60),
        st.decimals(min_value=0, max_value=10**9, places=4).map(lambda d: float(d)),
        st.sampled_from(["0", "0.0", "-1", "1e3", "1.5e1", " 1", "1_000", "\u0661", "NaN"]),
        st.sampled_from(["1.25", "1e1", "0.1234567"]).map(JsonNumber.from_literal),
        st.floats(),
        st.booleans(),
        st.none(),
    )


def _entitlements() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.uuids().map(str),
        st.uuids().map(lambda u: str(u).upper()),
        st.uuids().map(lambda u: u.hex),
        st.uuids().map(lambda u: "{" + str(u) + "}"),
        st.uuids().map(lambda u: str(u) + "\n"),
        st.sampled_from(["not-a-uuid", ""]),
        _NOT_TEXT,
    )


def _data() -> st.SearchStrategy[Any]:
    usage = st.fixed_dictionaries(
        {},
        optional={
            "feature": st.one_of(_KEYS, _NOT_TEXT),
            "quantity": _quantities(),
            "entitlement_id": _entitlements(),
        },
    )
    extra = st.dictionaries(
        st.one_of(_TEXT, st.integers(0, 3)),
        st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3), st.dictionaries(_TEXT, _SCALARS)),
        max_size=3,
    )
    big = st.just({"blob": "x" * 70_000})
    merged = st.builds(lambda a, b: {**b, **a}, usage, extra)
    return st.one_of(usage, merged, big, st.just([]), st.none(), _TEXT)


def _payloads() -> st.SearchStrategy[Any]:
    def one(choice: st.SearchStrategy[Any], valid: Any) -> st.SearchStrategy[Any]:
        # Mostly the valid value, so most events are wrong in one or two places.
        return st.integers(0, 19).flatmap(
            lambda i: choice if i == 0 else st.just(MISSING) if i == 1 else st.just(valid)
        )

    fields = st.fixed_dictionaries(
        {
            "specversion": one(st.sampled_from(["1.0", "1.1", 1.0, None]), "1.0"),
            "id": one(st.one_of(_TEXT, _NOT_TEXT), "evt-1"),
            "source": one(st.one_of(_TEXT, _NOT_TEXT), "tests"),
            "type": one(st.one_of(_TYPES, _NOT_TEXT), "meterd.usage"),
            "subject": one(st.one_of(_TEXT, _NOT_TEXT), "cust-1"),
            "org": one(st.one_of(_KEYS, _NOT_TEXT), "acme"),
            "time": one(_times(), MISSING),
            "datacontenttype": one(
                st.sampled_from(
                    [
                        None,
                        "application/json",
                        "application/cloudevents+json",
                        "application/json\n",
                        "text/plain",
                        1,
                    ]
                )
                | _NOT_TEXT,
                MISSING,
            ),
            "data": one(_data(), {"feature": "api_calls", "quantity": "1"}),
        }
    )
    extensions = st.dictionaries(
        st.one_of(_TEXT, st.integers(0, 3)), st.one_of(_SCALARS, st.lists(_SCALARS)), max_size=2
    )

    def assemble(chosen: dict[str, Any], more: dict[Any, Any]) -> dict[Any, Any]:
        payload = {k: v for k, v in chosen.items() if v is not MISSING}
        return {**more, **payload}

    payload = st.builds(assemble, fields, st.one_of(st.just({}), st.just({}), extensions))
    return st.one_of(payload, payload, payload, _SCALARS, st.lists(_SCALARS, max_size=2))


_ORG_PARAM = st.one_of(st.none(), st.none(), _KEYS)


def _same_event(fast: UsageEvent | RawEvent, full: UsageEvent | RawEvent | InvalidEvent) -> None:
    assert type(fast) is type(full)
    assert fast == full
    assert fast.time.tzinfo is full.time.tzinfo
    if isinstance(fast, UsageEvent):
        assert isinstance(full, UsageEvent)
        assert str(fast.quantity) == str(full.quantity)  # the same exponent too


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_payloads(), org=_ORG_PARAM)
def test_the_fast_path_builds_what_the_model_builds_or_declines(
    payload: Any, org: str | None
) -> None:
    full = parse_event_by_model(payload, received_at=NOW, org=org)
    fast = fast_event(payload, received_at=NOW, org=org) if type(payload) is dict else None
    if fast is not None:
        _same_event(fast, full)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_payloads(), org=_ORG_PARAM)
def test_parse_event_answers_as_the_model_alone(payload: Any, org: str | None) -> None:
    parsed = parse_event(payload, received_at=NOW, org=org)
    full = parse_event_by_model(payload, received_at=NOW, org=org)
    if isinstance(full, InvalidEvent):
        assert isinstance(parsed, InvalidEvent)
        assert parsed.reason == full.reason
    else:
        assert not isinstance(parsed, InvalidEvent)
        _same_event(parsed, full)


def test_the_usual_usage_event_takes_the_fast_path() -> None:
    target = str(uuid.uuid4())
    payload = event(quantity="12.5", time=NOW, entitlement_id=target)
    fast = fast_event(payload, received_at=NOW, org=None)
    assert isinstance(fast, UsageEvent)
    assert (fast.quantity, fast.entitlement_id) == (Decimal("12.5"), uuid.UUID(target))


def test_a_raw_event_with_flat_data_takes_the_fast_path() -> None:
    payload = {**event(), "type": "llm.request", "data": {"model": "m1", "tokens": 120}}
    assert isinstance(fast_event(payload, received_at=NOW, org=None), RawEvent)


def test_nested_data_and_extensions_take_the_fast_path_once_their_shape_is_checked() -> None:
    payload = {**event(), "traceparent": "00-ab", "data": {"feature": "f", "quantity": 1, "t": [1]}}
    assert isinstance(fast_event(payload, received_at=NOW, org=None), UsageEvent)


def test_a_time_with_an_offset_is_converted_to_utc() -> None:
    payload = {**event(), "time": "2026-11-22T12:00:00.5+02:00"}
    fast = fast_event(payload, received_at=NOW, org=None)
    assert fast is not None
    assert fast.time == datetime(2026, 11, 22, 10, 0, 0, 500_000, tzinfo=UTC)
    assert fast.time.tzinfo is UTC


def test_the_time_read_last_is_not_read_for_another_text() -> None:
    first = fast_event({**event(), "time": "2026-11-22T10:00:00Z"}, received_at=NOW, org=None)
    later = fast_event({**event(), "time": "2026-11-22T11:00:00Z"}, received_at=NOW, org=None)
    assert first is not None and later is not None
    assert later.time - first.time == timedelta(hours=1)


def test_a_json_number_quantity_is_read_from_its_literal_not_its_float() -> None:
    payload = {**event(), "data": {"feature": "f", "quantity": JsonNumber.from_literal("0.1")}}
    fast = fast_event(payload, received_at=NOW, org=None)
    assert isinstance(fast, UsageEvent) and fast.quantity == Decimal("0.1")


def test_an_invalid_event_is_left_to_the_model() -> None:
    payload = {**event(), "data": {"feature": "f", "quantity": "-1"}}
    assert fast_event(payload, received_at=NOW, org=None) is None


def test_a_final_newline_is_not_a_valid_key_as_in_the_model() -> None:
    payload = {**event(), "org": "acme\n"}
    assert fast_event(payload, received_at=NOW, org=None) is None
    assert isinstance(parse_event(payload, received_at=NOW), InvalidEvent)


def test_an_event_from_another_timezone_object_is_still_utc() -> None:
    offset = timezone(timedelta(hours=-3))
    payload = {**event(), "time": datetime(2026, 11, 22, 7, tzinfo=offset).isoformat()}
    fast = fast_event(payload, received_at=NOW, org=None)
    assert fast is not None and fast.time == datetime(2026, 11, 22, 10, tzinfo=UTC)


def test_the_fast_constructors_build_the_events_the_dataclasses_build() -> None:
    target = uuid.uuid4()
    fields: tuple[Any, ...] = ("acme", "c", "f", "s", "e", NOW, Decimal("2.5"), target, {})
    assert new_usage_event(*fields) == UsageEvent(*fields)
    raw: tuple[Any, ...] = ("acme", "c", "s", "e", "llm.request", NOW, {"model": "m"})
    assert new_raw_event(*raw) == RawEvent(*raw)


def test_an_event_built_fast_is_frozen() -> None:
    built = new_usage_event("acme", "c", "f", "s", "e", NOW, Decimal(1), None, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.quantity = Decimal(2)  # type: ignore[misc]


def test_an_attribute_an_api_key_replaces_must_still_be_a_json_value() -> None:
    payload = {**event(), "org": b"mallory"}
    assert fast_event(payload, received_at=NOW, org="acme") is None
    assert isinstance(parse_event(payload, received_at=NOW, org="acme"), InvalidEvent)


def test_an_event_over_the_size_limit_is_left_to_the_model() -> None:
    payload = {**event(), "data": {"feature": "f", "quantity": "1", "note": "x" * 70_000}}
    assert fast_event(payload, received_at=NOW, org=None) is None
    assert isinstance(parse_event(payload, received_at=NOW), InvalidEvent)


def test_an_event_whose_size_bound_is_too_rough_is_measured_then_read() -> None:
    payload = {**event(), "data": {"feature": "f", "quantity": "1", "note": "x" * 9_000}}
    assert isinstance(fast_event(payload, received_at=NOW, org=None), UsageEvent)


def test_a_replaced_org_attribute_still_counts_toward_the_size_limit() -> None:
    payload = {**event(), "org": "x" * 70_000}
    assert fast_event(payload, received_at=NOW, org="acme") is None
    assert isinstance(parse_event(payload, received_at=NOW, org="acme"), InvalidEvent)
