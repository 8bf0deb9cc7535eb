"""Exact quantities: decimals at the edges, integer micro-units inside.

Redis counters and Lua arithmetic work on integers. A Lua number is an IEEE
double, exact for integers up to 2**53, so one counter holds at most
``MAX_MICROS`` micro-units (about 9 billion units); an event that would not fit
is rejected as invalid rather than rounded.
"""

from __future__ import annotations

import re
from decimal import Decimal

from meterd.errors import InvalidError

SCALE = 6
MICROS_PER_UNIT: int = 10**SCALE
MAX_MICROS: int = 2**53 - 1
_QUANTUM = Decimal(1).scaleb(-SCALE)
#: The one grammar of a decimal quantity, wherever it enters (events, reserve, grants,
#: plans, the CLI, the client): ASCII digits, an optional point and 1-6 fractional
#: digits. No sign, no exponent, no spaces, no ``_`` separators, no other digits
#: (full-width U+FF11, Arabic-Indic U+0663), no NaN or infinity. ``[0-9]``, not
#: ``\d``: ``\d`` matches every Unicode digit, in Python's ``re`` and in pydantic's
#: patterns alike.
DECIMAL_TEXT_PATTERN = r"^[0-9]+(\.[0-9]{1,6})?$"
_DECIMAL_TEXT = re.compile(DECIMAL_TEXT_PATTERN)
#: A quantity's text is at most this long (leading zeros included).
MAX_QUANTITY_TEXT = 40
#: A non-integer JSON number is decoded as a binary float, which keeps every decimal
#: of at most 15 significant digits exactly (its shortest ``repr`` is that decimal);
#: past that, a float may already be another number. Longer quantities: send text.
MAX_FLOAT_DIGITS = 15
#: Plain decimals ("12", "0.5"): the common case, parsed without Decimal arithmetic.
_PLAIN = re.compile(r"([0-9]{1,15})(?:\.([0-9]{1,6}))?")
_GRAMMAR = (
    f"a decimal like 10 or 0.5 (ASCII digits, at most {SCALE} after the point;"
    " no sign, exponent, spaces or separators)"
)


class QuantityError(InvalidError):
    """A quantity that cannot be counted exactly."""


class JsonNumber(float):
    """A non-integer JSON number as decoded, with its literal text kept: the API
    decodes bodies with ``parse_float=JsonNumber.from_literal``, so a quantity sent
    as ``1e1`` is judged by what was sent, not by the float ``10.0``. Everywhere
    else it is the float it equals (and serialises as that float)."""

    text: str

    @classmethod
    def from_literal(cls, literal: str) -> JsonNumber:
        number = cls(literal)
        number.text = literal
        return number


def _float_text(value: float) -> str:
    """The decimal text of a JSON number decoded as a float: its literal if the
    decoder kept it, else its shortest ``repr``; refused past what a float keeps."""
    text = value.text if isinstance(value, JsonNumber) else repr(value)
    if _DECIMAL_TEXT.fullmatch(text) is None:
        raise QuantityError(
            f"quantity {text[:MAX_QUANTITY_TEXT]!r} is not {_GRAMMAR}; "
            "as a JSON number, write it without an exponent"
        )
    if len(text.replace(".", "").lstrip("0")) > MAX_FLOAT_DIGITS:
        raise QuantityError(
            f"quantity {text[:MAX_QUANTITY_TEXT]!r} has more than {MAX_FLOAT_DIGITS}"
            " significant digits, more than a JSON number keeps exactly: send it as a string"
        )
    return text


def _checked_text(text: str) -> Decimal:
    if len(text) > MAX_QUANTITY_TEXT or _DECIMAL_TEXT.fullmatch(text) is None:
        raise QuantityError(f"quantity {text[:MAX_QUANTITY_TEXT]!r} is not {_GRAMMAR}")
    return Decimal(text)


def parse_quantity(value: object) -> Decimal:
    """Parse a positive quantity: text in ``DECIMAL_TEXT_PATTERN``, a JSON integer, or
    a JSON number in plain form (no exponent) with at most 15 significant digits.

    A float is read through its decimal text (its literal, or its shortest ``repr``:
    ``0.1`` stays ``0.1``), never through binary arithmetic. A ``Decimal`` (from
    Python callers) is taken by value. Booleans, NaN and infinities are refused.
    """
    if isinstance(value, bool) or value is None:
        raise QuantityError("quantity must be a decimal number or string")
    if isinstance(value, str):
        dec = _checked_text(value)
    elif isinstance(value, float):
        dec = Decimal(_float_text(value))
    elif isinstance(value, int):
        dec = Decimal(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise QuantityError("quantity must be finite")
        dec = value
    else:
        raise QuantityError("quantity must be a decimal number or string")
    if dec <= 0:
        raise QuantityError("quantity must be positive")
    exponent = dec.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -SCALE and dec != dec.quantize(_QUANTUM):
        raise QuantityError(f"quantity has more than {SCALE} fractional digits")
    if to_micros(dec) > MAX_MICROS:
        raise QuantityError(
            "quantity is too large to count exactly"
            f" (at most {format_quantity(from_micros(MAX_MICROS))})"
        )
    return dec


def parse_decimal_text(text: str, what: str = "quantity") -> Decimal:
    """Parse a granted quantity as text (``DECIMAL_TEXT_PATTERN``): ``"10"``,
    ``"0.5"``, ``"0"``. Refuses anything else with a ``QuantityError`` that says
    what is wrong, and a value too large to count exactly (over ``MAX_MICROS``
    micro-units). Usage events keep their own parser (``parse_quantity``: positive,
    and JSON numbers too)."""
    if len(text) > MAX_QUANTITY_TEXT or _DECIMAL_TEXT.fullmatch(text) is None:
        raise QuantityError(f"{what} {text[:MAX_QUANTITY_TEXT]!r} is not {_GRAMMAR}")
    value = Decimal(text)
    if to_micros(value) > MAX_MICROS:
        raise QuantityError(
            f"{what} {text[:40]!r} is too large to count exactly"
            f" (at most {format_quantity(from_micros(MAX_MICROS))})"
        )
    return value


def to_micros(value: Decimal) -> int:
    """Decimal units to integer micro-units (the value must already be exact)."""
    return int(value.scaleb(SCALE).to_integral_exact())


def from_micros(micros: int) -> Decimal:
    """Integer micro-units to a Decimal with six fractional digits."""
    return Decimal(micros).scaleb(-SCALE).quantize(_QUANTUM)


def format_quantity(value: Decimal) -> str:
    """A quantity as a plain decimal string without trailing zeros ("80", "0.5"),
    the form payloads and API responses carry: exact, and never an exponent."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_optional_quantity(value: Decimal | None) -> str | None:
    """``format_quantity``, with None (unlimited, unset) kept as None."""
    return None if value is None else format_quantity(value)


def parse_quantity_micros(value: object) -> int:
    """``to_micros(parse_quantity(value))``, with a fast path for plain decimal strings."""
    if isinstance(value, str):
        match = _PLAIN.fullmatch(value)
        if match is not None:
            whole: str = match.group(1)
            fraction: str | None = match.group(2)
            micros = int(whole) * MICROS_PER_UNIT + (
                int(fraction.ljust(SCALE, "0")) if fraction else 0
            )
            if 0 < micros <= MAX_MICROS:
                return micros
    return to_micros(parse_quantity(value))
