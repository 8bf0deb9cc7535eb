"""Bounds on request bodies: values every backend stores, and every date meterd
derives from them still a date.

* Every body model is a ``RequestBody``: a field meterd does not know is a 400
  naming it, never silently dropped (a misspelt reserve option would otherwise
  consume at once, an option of a later version be left out without a word).
* Granted quantities: plain decimals of at most 6 fractional digits, at most
  ``quantity.LARGEST`` (what a scale-0 counter holds exactly; the feature's scale
  may bound them lower: ``Catalog.check_grant``), as text or as a JSON number
  judged by its literal text (``exact_json``), so ``0.1`` is exact and ``1e3``
  refused as it would be in a string.
* Date-times: with a timezone, and in UTC from ``EARLIEST`` up to (not
  including) ``BODY_LATEST``, the start of year 9000: meterd derives later dates
  from them (a grace period of up to 10 years, the next calendar month, a plan's
  term of up to ``MAX_TERM_YEARS`` years: a bound of the catalog,
  ``services.catalog.rules``, that the CLI meets too), and each of those must still fall
  before year 10000.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from meterd.core.errors import InvalidError
from meterd.core.filters import EARLIEST
from meterd.core.quantity import (
    DECIMAL_TEXT_PATTERN,
    MAX_QUANTITY_TEXT,
    SCALE,
    json_number_text,
    parse_decimal_text,
    parse_quantity,
)
from meterd.core.timeutil import as_utc

# The catalog's bounds, which the body schemas state (the CLI meets them in the catalog).
from meterd.services.catalog.rules import MAX_PRIORITY as MAX_PRIORITY
from meterd.services.catalog.rules import MAX_TERM_YEARS as MAX_TERM_YEARS

BODY_LATEST = datetime(9000, 1, 1, tzinfo=UTC)
BODY_RANGE = (
    f"from {EARLIEST.isoformat().replace('+00:00', 'Z')}"
    f" up to (not including) {BODY_LATEST.isoformat().replace('+00:00', 'Z')}"
)


class RequestBody(BaseModel):
    """A JSON body meterd defines. A field it does not know is refused (400 naming
    it: ``errors.describe_validation``), as Stripe answers "Received unknown
    parameter": a misspelt option must not be dropped in silence."""

    model_config = ConfigDict(extra="forbid")


def _number_as_text(value: Any) -> Any:
    """A quantity sent as a JSON number, as the text it was sent as; text as it is.

    The body was decoded by ``exact_json.loads_exact``: an integer is a Python int,
    any other number a ``JsonNumber`` that keeps its literal. So a number is judged
    exactly as the same digits in a string would be (``0.1`` is the decimal 0.1,
    never the float nearest it), by the grammar, bounds and scale of quantities;
    an exponent (``1e3``) or a sign is refused, as in a string."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return json_number_text(value, float_digits=None)


def _countable(text: str) -> str:
    parse_decimal_text(text)  # the grammar, and the bound the counters hold exactly
    return text


def _positive(text: str) -> str:
    parse_quantity(text)  # the one grammar, positive, within what the counters hold
    return text


def _quantity_schema(description: str, minimum: dict[str, int]) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DECIMAL_TEXT_PATTERN, "maxLength": MAX_QUANTITY_TEXT},
                {"type": "number", **minimum},
            ],
            "description": description,
        }
    )


_NUMBER_RULE = (
    'a decimal as a string (`"12.5"`) or a JSON number (`12.5`), read exactly as'
    f" written: ASCII digits, at most {SCALE} after the point, no sign or exponent"
)

#: A granted quantity in a body (``0`` included): a plain decimal
#: (``DECIMAL_TEXT_PATTERN``) that meterd counts exactly (at most
#: ``quantity.LARGEST``), as the CLI takes it, as text or as a JSON number.
QuantityText = Annotated[
    str,
    Field(pattern=DECIMAL_TEXT_PATTERN, max_length=MAX_QUANTITY_TEXT),
    BeforeValidator(_number_as_text),
    AfterValidator(_countable),
    _quantity_schema(_NUMBER_RULE, {"minimum": 0}),
]

#: A quantity to consume (reserve): a ``QuantityText`` above zero.
PositiveQuantityText = Annotated[
    str,
    Field(pattern=DECIMAL_TEXT_PATTERN, max_length=MAX_QUANTITY_TEXT),
    BeforeValidator(_number_as_text),
    AfterValidator(_positive),
    _quantity_schema(_NUMBER_RULE + ", above zero", {"exclusiveMinimum": 0}),
]


#: Dimension filters in a body (``meterd.core.meters.check_dimensions`` checks them
#: further): event ``data`` property (a dotted path) -> the value it must have, text,
#: an integer or a boolean.
Dimensions = Annotated[
    dict[str, StrictStr | StrictInt | StrictBool],
    Field(
        max_length=16,
        description="data property (dotted path, e.g. model or region.zone) -> the value"
        " it must equal: text, an integer or a boolean",
        examples=[{"model": "gpt-4o"}],
    ),
]


def quantity_of(text: str | None) -> Decimal | None:
    """A ``QuantityText`` field as the services take it (None stays None)."""
    return None if text is None else Decimal(text)


def moment(value: datetime | None, name: str) -> datetime | None:
    """``value`` in UTC, if it carries a timezone and falls within the body range."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidError(f"{name} must carry a timezone, e.g. 2026-11-22T10:00:00Z")
    try:
        utc = as_utc(value)
    except OverflowError:
        utc = None
    if utc is None or utc >= BODY_LATEST:
        raise InvalidError(f"{name} is out of range: in UTC it must be {BODY_RANGE}")
    return utc
