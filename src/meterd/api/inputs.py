"""Bounds on request bodies: values every backend stores, and every date meterd
derives from them still a date.

* Granted quantities: plain decimals of at most 6 fractional digits, at most
  ``quantity.LARGEST`` (what a scale-0 counter holds exactly; the feature's scale
  may bound them lower: ``Catalog.check_grant``).
* Date-times: with a timezone, and in UTC from ``EARLIEST`` up to (not
  including) ``BODY_LATEST``, the start of year 9000: meterd derives later dates
  from them (a grace period of up to 10 years, the next calendar month, a plan's
  term of up to ``MAX_TERM_YEARS`` years), and each of those must still fall
  before year 10000.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StrictBool, StrictInt, StrictStr

from meterd.errors import InvalidError
from meterd.filters import EARLIEST
from meterd.quantity import DECIMAL_TEXT_PATTERN, parse_decimal_text
from meterd.timeutil import as_utc

BODY_LATEST = datetime(9000, 1, 1, tzinfo=UTC)
#: A plan's term in years, at most (terms in months and days are bounded by
#: ``term_value`` <= 10,000 already: 834 and 28 years).
MAX_TERM_YEARS = 900
BODY_RANGE = (
    f"from {EARLIEST.isoformat().replace('+00:00', 'Z')}"
    f" up to (not including) {BODY_LATEST.isoformat().replace('+00:00', 'Z')}"
)


def _countable(text: str) -> str:
    parse_decimal_text(text)  # the grammar, and the bound the counters hold exactly
    return text


#: A granted quantity in a body: a plain decimal (``DECIMAL_TEXT_PATTERN``) that
#: meterd counts exactly (at most ``quantity.LARGEST``), as the CLI takes it.
QuantityText = Annotated[
    str,
    Field(pattern=DECIMAL_TEXT_PATTERN, max_length=40),
    AfterValidator(_countable),
]


#: Dimension filters in a body (``meterd.meters.check_dimensions`` checks them
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
