"""Quantities are exact decimals with at most six fractional digits."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterd.quantity import MAX_MICROS, QuantityError, from_micros, parse_quantity, to_micros


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", "1"),
        ("0.000001", "0.000001"),
        (5, "5"),
        (0.1, "0.1"),
        ("1.500000", "1.5"),
        ("1e3", "1000"),
    ],
)
def test_parses_strings_ints_and_json_floats_exactly(raw: object, expected: str) -> None:
    assert parse_quantity(raw) == Decimal(expected)


@pytest.mark.parametrize(
    "raw",
    [
        "0",
        "-1",
        "0.0000001",
        "abc",
        "NaN",
        "Infinity",
        "",
        None,
        True,
        [],
        {},
        float("inf"),
        "1e20",
    ],
)
def test_refuses_what_cannot_be_counted_exactly(raw: object) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(raw)


def test_a_float_is_read_through_its_shortest_repr_not_its_binary_value() -> None:
    assert parse_quantity(0.3) == Decimal("0.3")  # Decimal(0.3) would be 0.29999...


@given(st.integers(min_value=1, max_value=MAX_MICROS))
def test_micros_round_trip(micros: int) -> None:
    assert to_micros(parse_quantity(str(from_micros(micros)))) == micros


@given(st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), allow_nan=True))
def test_fast_path_agrees_with_the_exact_parser(value: Decimal) -> None:
    from meterd.quantity import parse_quantity_micros

    text = str(value)
    try:
        expected: int | None = to_micros(parse_quantity(text))
    except QuantityError:
        expected = None
    try:
        got: int | None = parse_quantity_micros(text)
    except QuantityError:
        got = None
    assert got == expected
