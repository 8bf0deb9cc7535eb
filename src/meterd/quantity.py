"""Exact quantities: decimals at the edges, integer micro-units inside.

Redis counters and Lua arithmetic work on integers. A Lua number is an IEEE
double, exact for integers up to 2**53, so one counter holds at most
``MAX_MICROS`` micro-units (about 9 billion units); an event that would not fit
is rejected as invalid rather than rounded.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from meterd.errors import InvalidError

SCALE = 6
MICROS_PER_UNIT: int = 10**SCALE
MAX_MICROS: int = 2**53 - 1
_QUANTUM = Decimal(1).scaleb(-SCALE)
#: Plain decimals ("12", "0.5"): the common case, parsed without Decimal arithmetic.
_PLAIN = re.compile(r"(\d{1,15})(?:\.(\d{1,6}))?")
#: The grammar of a decimal typed by a person or an API client for a quantity an
#: entitlement or plan grants: ASCII digits, an optional point and 1-6 fractional
#: digits; no sign, no exponent, no NaN or infinity (the API's ``DecimalText``).
DECIMAL_TEXT_PATTERN = r"^\d+(\.\d{1,6})?$"
_DECIMAL_TEXT = re.compile(DECIMAL_TEXT_PATTERN, re.ASCII)


class QuantityError(InvalidError):
    """A quantity that cannot be counted exactly."""


def parse_quantity(value: object) -> Decimal:
    """Parse a positive decimal with at most six fractional digits.

    Accepts strings and ints; a JSON number that Python decoded as a float is
    taken through its shortest ``repr`` (``0.1`` stays ``0.1``), never through
    binary arithmetic. Booleans, NaN and infinities are refused.
    """
    if isinstance(value, bool) or value is None:
        raise QuantityError("quantity must be a decimal number or string")
    if isinstance(value, float):
        value = repr(value)
    if not isinstance(value, (str, int, Decimal)):
        raise QuantityError("quantity must be a decimal number or string")
    try:
        dec = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise QuantityError(f"quantity {str(value)[:40]!r} is not a decimal number") from None
    if not dec.is_finite():
        raise QuantityError("quantity must be finite")
    if dec <= 0:
        raise QuantityError("quantity must be positive")
    exponent = dec.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -SCALE and dec != dec.quantize(_QUANTUM):
        raise QuantityError(f"quantity has more than {SCALE} fractional digits")
    if to_micros(dec) > MAX_MICROS:
        raise QuantityError("quantity is too large to count exactly")
    return dec


def parse_decimal_text(text: str, what: str = "quantity") -> Decimal:
    """Parse a granted quantity as text (``DECIMAL_TEXT_PATTERN``): ``"10"``,
    ``"0.5"``, ``"0"``. Refuses anything else with a ``QuantityError`` that says
    what is wrong, and a value too large to count exactly (over ``MAX_MICROS``
    micro-units). Usage events keep their own parser (``parse_quantity``)."""
    if _DECIMAL_TEXT.fullmatch(text) is None:
        raise QuantityError(
            f"{what} {text[:40]!r} is not a decimal like 10 or 0.5"
            f" (digits, at most {SCALE} after the point, no sign or exponent)"
        )
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
