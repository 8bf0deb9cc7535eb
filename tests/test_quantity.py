"""Quantities are exact decimals with at most six fractional digits, in one grammar:
ASCII digits, an optional point, 1-6 fractional digits; no sign, exponent, spaces,
separators or other digits."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterd.core.quantity import (
    MAX_MICROS,
    JsonNumber,
    QuantityError,
    from_micros,
    parse_event_quantity,
    parse_quantity,
    to_micros,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", "1"),
        ("0.000001", "0.000001"),
        (5, "5"),
        (0.1, "0.1"),
        ("1.500000", "1.5"),
        ("007", "7"),
        (10.0, "10"),
        (JsonNumber.from_literal("2.50"), "2.5"),
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
        float("nan"),
        "1e20",
        "1.0000000",
        "0" * 41 + "1",
    ],
)
def test_refuses_what_cannot_be_counted_exactly(raw: object) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(raw)


CONFUSABLE = [
    "\uff11",  # full-width 1
    "\u0663",  # Arabic-Indic 3
    "\u0661",  # Arabic-Indic 1
    "\u00b2",  # superscript 2
    "1_000",
    " 2 ",
    "2 ",
    "1e1",
    "1E1",
    "+1",
    "0x10",
    "NaN",
    "Infinity",
    "1.",
    ".5",
    "1,5",
    "1.5.1",
    "1\x00",
]


@pytest.mark.parametrize("raw", CONFUSABLE)
def test_text_outside_the_grammar_is_refused_by_both_parsers(raw: str) -> None:
    with pytest.raises(QuantityError, match=r"is not a decimal like 10 or 0\.5"):
        parse_quantity(raw)
    with pytest.raises(QuantityError, match=r"is not a decimal like 10 or 0\.5"):
        parse_event_quantity(raw)


@pytest.mark.parametrize("literal", ["1e1", "1E+3", "1.5e0", "-1.5"])
def test_a_json_number_is_judged_by_its_literal_and_exponents_are_refused(literal: str) -> None:
    with pytest.raises(QuantityError, match="without an exponent"):
        parse_quantity(JsonNumber.from_literal(literal))


def test_a_float_without_its_literal_in_exponent_form_is_refused() -> None:
    with pytest.raises(QuantityError, match="without an exponent"):
        parse_quantity(1e16)  # repr: 1e+16


def test_a_json_number_of_more_than_15_significant_digits_must_be_text() -> None:
    with pytest.raises(QuantityError, match="send it as a string"):
        parse_quantity(JsonNumber.from_literal("9007199254.740991"))
    assert parse_quantity("9007199254.740991") == Decimal("9007199254.740991")


def test_a_json_number_of_15_significant_digits_is_exact() -> None:
    assert parse_quantity(JsonNumber.from_literal("900719925.474099")) == Decimal(
        "900719925.474099"
    )


def test_a_float_is_read_through_its_shortest_repr_not_its_binary_value() -> None:
    assert parse_quantity(0.3) == Decimal("0.3")  # Decimal(0.3) would be 0.29999...


@given(st.integers(min_value=1, max_value=MAX_MICROS))
def test_micros_round_trip(micros: int) -> None:
    assert to_micros(parse_quantity(str(from_micros(micros)))) == micros


@given(st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), allow_nan=True))
def test_fast_path_agrees_with_the_exact_parser(value: Decimal) -> None:
    text = str(value)
    try:
        expected: Decimal | None = parse_quantity(text)
    except QuantityError:
        expected = None
    try:
        got: Decimal | None = parse_event_quantity(text)
    except QuantityError:
        got = None
    assert got == expected
