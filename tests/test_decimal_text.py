"""The grammar of a granted quantity typed as text (CLI, API): one definition."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meterd.core.quantity import DECIMAL_TEXT_PATTERN, QuantityError, parse_decimal_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10", "10"),
        ("0", "0"),
        ("0.5", "0.5"),
        ("007.000001", "7.000001"),
        ("9007199254", "9007199254"),
    ],
)
def test_parse_decimal_text_takes_plain_decimals_with_up_to_six_fractional_digits(
    text: str, expected: str
) -> None:
    assert parse_decimal_text(text) == Decimal(expected)


@pytest.mark.parametrize(
    "text",
    ["abc", "NaN", "Infinity", "1e400", "1E3", "0.0000001", "-1", "+1", "1.", ".5", "1,5",
     " 1", "1 ", "1\n", "", "\u0661\u0662"],
)  # fmt: skip
def test_parse_decimal_text_refuses_anything_else(text: str) -> None:
    with pytest.raises(QuantityError, match=r"is not a decimal like 10 or 0\.5"):
        parse_decimal_text(text)


def test_parse_decimal_text_refuses_a_quantity_too_large_to_count_exactly() -> None:
    with pytest.raises(QuantityError, match="too large to count exactly"):
        parse_decimal_text("9007199254740992")


def test_parse_decimal_text_names_what_it_parses() -> None:
    with pytest.raises(QuantityError, match=r"^renewal quantity 'x'"):
        parse_decimal_text("x", "renewal quantity")


def test_the_api_validates_entitlement_quantities_with_the_same_grammar() -> None:
    from meterd.api.inputs import PositiveQuantityText, QuantityText

    for annotated in (QuantityText, PositiveQuantityText):
        field = annotated.__metadata__[0]
        (pattern,) = [m.pattern for m in field.metadata if hasattr(m, "pattern")]
        assert pattern == DECIMAL_TEXT_PATTERN
