"""Exact quantities: decimals at the edges, integer units of a feature's scale inside.

A feature declares its scale: how many fractional digits it counts (0-6, 6 by
default). Redis counters and Lua arithmetic hold integers of 10^-scale units.
A Lua number is an IEEE double, exact for integers up to 2**53 - 1
(``MAX_UNITS``), so a counter holds at most ``max_quantity(scale)``:
9,007,199,254,740,991 units at scale 0, 9,007,199,254,740.991 at scale 3,
9,007,199,254.740991 at scale 6. A value that would not fit is refused with that
bound, never rounded. Both databases hold more (``storage/exact.py`` for SQLite).
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, InvalidOperation

from meterd.core.errors import InvalidError

SCALE = 6
MAX_MICROS: int = 2**53 - 1
#: The largest integer a counter holds exactly, in 10^-scale units (Lua's doubles).
MAX_UNITS: int = 2**53 - 1
#: The largest quantity any feature counts exactly (``MAX_UNITS`` at scale 0): what
#: the grammar admits before a feature's scale is known.
LARGEST = Decimal(MAX_UNITS)
_QUANTUM = Decimal(1).scaleb(-SCALE)
_POWERS: list[int] = [10**k for k in range(SCALE + 1)]
#: Wide enough for every Numeric(38, 6) value: the default context keeps 28 digits.
EXACT = Context(prec=80, traps=[InvalidOperation])
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


def json_number_text(value: int | float, *, float_digits: int | None = MAX_FLOAT_DIGITS) -> str:
    """The decimal text of a number as sent: an integer's digits, a ``JsonNumber``'s
    literal (what the API and the worker decode JSON into), or a plain float's
    shortest ``repr`` (a Python caller's). Refused: text outside the grammar (a
    sign, an exponent), and a non-integer of more than ``float_digits``
    significant digits, what a float keeps exactly: an event may pass through a
    float on its way (the API publishes it to the broker with kombu's encoder).
    ``float_digits=None``: the literal is used as it is (a request body's)."""
    if isinstance(value, int):
        text = str(value)
    else:
        text = value.text if isinstance(value, JsonNumber) else repr(value)
        if float_digits is not None and len(text.replace(".", "").lstrip("0")) > float_digits:
            raise QuantityError(
                f"quantity {text[:MAX_QUANTITY_TEXT]!r} has more than {float_digits}"
                " significant digits, more than a JSON number keeps exactly: send it as a string"
            )
    if _DECIMAL_TEXT.fullmatch(text) is None:
        raise QuantityError(
            f"quantity {text[:MAX_QUANTITY_TEXT]!r} is not {_GRAMMAR}: no sign or exponent"
            " (as a JSON number, write it without an exponent: 1000, not 1e3)"
        )
    return text


def _checked_text(text: str) -> Decimal:
    if len(text) > MAX_QUANTITY_TEXT or _DECIMAL_TEXT.fullmatch(text) is None:
        raise QuantityError(f"quantity {text[:MAX_QUANTITY_TEXT]!r} is not {_GRAMMAR}")
    return Decimal(text)


def parse_quantity(value: object) -> Decimal:
    """Parse a positive quantity: text in ``DECIMAL_TEXT_PATTERN``, a JSON integer, or
    a JSON number in plain form (no exponent; ``json_number_text``).

    A float is read through its decimal text (its literal, or its shortest ``repr``:
    ``0.1`` stays ``0.1``), never through binary arithmetic. A ``Decimal`` (from
    Python callers) is taken by value. Booleans, NaN and infinities are refused.
    """
    if isinstance(value, bool) or value is None:
        raise QuantityError("quantity must be a decimal number or string")
    if isinstance(value, str):
        dec = _checked_text(value)
    elif isinstance(value, float):
        dec = Decimal(json_number_text(value))
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
    if dec > LARGEST:
        raise QuantityError(
            f"quantity is too large to count exactly (at most {LARGEST} at scale 0)"
        )
    return dec


def parse_meter_value(value: object) -> Decimal:
    """A value a meter reads from a raw event: ``parse_quantity``, and zero too (an
    LLM request with no cached tokens, a gauge that reads empty)."""
    if (value == 0 and not isinstance(value, bool)) or value in ("0", "0.0"):
        return Decimal(0)
    if isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value) and not value.strip("0."):
        return Decimal(0)
    return parse_quantity(value)


def parse_decimal_text(text: str, what: str = "quantity") -> Decimal:
    """Parse a granted quantity as text (``DECIMAL_TEXT_PATTERN``): ``"10"``,
    ``"0.5"``, ``"0"``. Refuses anything else with a ``QuantityError`` that says
    what is wrong, and a value no feature could count exactly (over ``LARGEST``;
    its feature's scale may bound it lower: ``check_scaled``). Usage events keep
    their own parser (``parse_quantity``: positive, and JSON numbers too)."""
    if len(text) > MAX_QUANTITY_TEXT or _DECIMAL_TEXT.fullmatch(text) is None:
        raise QuantityError(f"{what} {text[:MAX_QUANTITY_TEXT]!r} is not {_GRAMMAR}")
    value = Decimal(text)
    if value > LARGEST:
        raise QuantityError(
            f"{what} {text[:40]!r} is too large to count exactly (at most {LARGEST} at scale 0)"
        )
    return value


def to_micros(value: Decimal) -> int:
    """Decimal units to integer micro-units (the value must already be exact)."""
    return int(value.scaleb(SCALE, context=EXACT).to_integral_exact(context=EXACT))


def from_micros(micros: int) -> Decimal:
    """Integer micro-units to a Decimal with six fractional digits."""
    return Decimal(micros).scaleb(-SCALE, context=EXACT).quantize(_QUANTUM, context=EXACT)


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


def parse_event_quantity(value: object) -> Decimal:
    """``parse_quantity`` with a fast path for short plain decimal strings (the
    common case: ``"1"``, ``"12.5"``): the grammar is the regular expression's."""
    if isinstance(value, str) and _PLAIN.fullmatch(value) is not None and value.strip("0."):
        return Decimal(value)
    return parse_quantity(value)


def max_quantity(scale: int) -> Decimal:
    """The most one counter or limit of a feature of ``scale`` holds exactly."""
    return from_units(MAX_UNITS, scale)


def to_units(value: Decimal, scale: int) -> int:
    """A decimal quantity as integer 10^-scale units; raises ``QuantityError`` if it
    has more fractional digits than the scale keeps (never rounds). Exact rational
    arithmetic on the value's integer ratio (a power of ten below it)."""
    numerator, denominator = value.as_integer_ratio()
    units: int
    rest: int
    units, rest = divmod(numerator * _POWERS[scale], denominator)
    if rest:
        raise QuantityError(
            f"quantity {format_quantity(value)} has more fractional digits than its feature"
            f" counts (scale {scale}: at most {scale} after the point)"
        )
    return units


def from_units(units: int, scale: int) -> Decimal:
    """Integer 10^-scale units as a Decimal with six fractional digits."""
    return Decimal(units).scaleb(-scale, context=EXACT).quantize(_QUANTUM, context=EXACT)


def check_scaled(value: Decimal, scale: int, what: str = "quantity") -> int:
    """``value`` in 10^-scale units, refused with a ``QuantityError`` that says why if
    it has too many fractional digits or passes ``max_quantity(scale)``."""
    units = to_units(value, scale)
    if units > MAX_UNITS:
        raise QuantityError(
            f"{what} {format_quantity(value)} is more than a counter of this feature holds"
            f" exactly (scale {scale}: at most {format_quantity(max_quantity(scale))})"
        )
    return units
