"""Query-string filters in the Zenskar style: ``field``, ``field__neq``, ``__gt``,
``__gte``, ``__lt``, ``__lte``, ``__in`` (comma-separated) and ``__isnull``.

Each route declares its filterable fields and their types; a parameter that is
not a known field with a known operator, or a value that does not parse as the
field's type, is a ``FilterError`` (400 with a message naming it). So is a value
outside what meterd stores on every backend: a date-time outside years 1 to 9999
once in UTC, an integer outside 64 bits, a decimal above ``MAX_QUANTITY`` or with
more than 6 fractional digits (it could only match by rounding). Parsed
filters name fields, never columns: the storage layer maps them to columns from
its own whitelist, and values are always bound parameters.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from meterd.core.errors import InvalidError
from meterd.core.quantity import LARGEST, SCALE
from meterd.core.timeutil import as_utc


class FilterError(InvalidError):
    """A filter parameter that cannot be applied, with why."""


class Op(StrEnum):
    EQ = "eq"
    NEQ = "neq"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    IN = "in"
    ISNULL = "isnull"


class Kind(StrEnum):
    UUID = "uuid"
    DATETIME = "datetime"
    DECIMAL = "decimal"
    STRING = "string"
    INTEGER = "integer"


#: The Python type of each kind's values (what a parsed filter, or a sort value, holds).
VALUE_TYPES: dict[Kind, type] = {
    Kind.UUID: uuid.UUID,
    Kind.DATETIME: datetime,
    Kind.DECIMAL: Decimal,
    Kind.STRING: str,
    Kind.INTEGER: int,
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ORDERED = frozenset({Kind.DATETIME, Kind.DECIMAL, Kind.INTEGER})
MAX_IN = 500
_MAX_LENGTH = 200

#: Integers are BIGINT columns on every backend.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: The largest quantity meterd counts or grants (``quantity.LARGEST``: 2^53 - 1 at
#: scale 0); both backends store more, no row holds more.
MAX_QUANTITY = LARGEST
_QUANTUM = Decimal(1).scaleb(-SCALE)
#: Every date-time filter, in UTC, falls within what Python (and so meterd) represents.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
DATETIME_RANGE = " and ".join(m.isoformat().replace("+00:00", "Z") for m in (EARLIEST, LATEST))


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    op: Op
    #: One value, a tuple of values (IN), or a bool (ISNULL).
    value: Any


def parse_datetime(raw: str, name: str) -> datetime:
    """An ISO 8601 date-time in UTC (naive: taken as UTC). One that falls outside
    years 1 to 9999 once converted to UTC is out of range, not a server error."""
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"{name}: {raw[:60]!r} is not a valid datetime") from None
    try:
        return as_utc(moment)
    except OverflowError:
        raise FilterError(
            f"{name}: {raw[:60]!r} is out of range: in UTC it must fall between {DATETIME_RANGE}"
        ) from None


#: The filter grammar of a quantity: the API's decimal grammar, a sign allowed
#: (``quantity__gt=-1``). Not Python's: no ``1_000``, ``1e3``, `` 2 `` or non-ASCII digits.
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)


def parse_decimal(raw: str, name: str) -> Decimal:
    """A finite decimal that meterd can store exactly: at most 6 fractional digits
    (a seventh could only match by rounding) and at most ``MAX_QUANTITY``."""
    if len(raw) > 64 or _PLAIN_DECIMAL.fullmatch(raw) is None:
        raise FilterError(
            f"{name}: {raw[:60]!r} is not a valid decimal: ASCII digits with one optional"
            " point and an optional leading minus (no exponent, spaces or separators)"
        )
    value = Decimal(raw)
    if abs(value) > MAX_QUANTITY:
        raise FilterError(
            f"{name}: {raw[:60]!r} is out of range: quantities are at most {MAX_QUANTITY}"
            " (the largest meterd stores)"
        )
    if value != value.quantize(_QUANTUM):
        raise FilterError(
            f"{name}: {raw[:60]!r} has more than {SCALE} fractional digits:"
            f" quantities are exact to {_QUANTUM}, so it would only match by rounding"
        )
    return value


def parse_integer(raw: str, name: str) -> int:
    """A 64-bit integer (what every integer column holds)."""
    try:
        value = int(raw)
    except ValueError:
        raise FilterError(f"{name}: {raw[:60]!r} is not a valid integer") from None
    if not INT64_MIN <= value <= INT64_MAX:
        raise FilterError(
            f"{name}: {raw[:60]!r} is out of range: integers are 64-bit,"
            f" from {INT64_MIN} to {INT64_MAX}"
        )
    return value


def _parse_value(kind: Kind, raw: str, name: str) -> Any:
    raw = raw.strip()
    if len(raw) > _MAX_LENGTH:
        raise FilterError(f"{name}: value too long (at most {_MAX_LENGTH} characters)")
    if kind is Kind.UUID:
        try:
            return uuid.UUID(raw)
        except ValueError:
            raise FilterError(f"{name}: {raw[:60]!r} is not a valid uuid") from None
    if kind is Kind.DATETIME:
        return parse_datetime(raw, name)
    if kind is Kind.DECIMAL:
        return parse_decimal(raw, name)
    if kind is Kind.INTEGER:
        return parse_integer(raw, name)
    if _CONTROL.search(raw):
        raise FilterError(f"{name}: control characters are not allowed")
    return raw


def _parse_bool(raw: str, name: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise FilterError(f"{name}: expected true or false, got {raw[:20]!r}")


def parse_filters(
    params: Iterable[tuple[str, str]],
    fields: Mapping[str, Kind],
    *,
    reserved: Iterable[str] = (),
) -> list[Filter]:
    """The filters among ``params`` (query items); ``reserved`` names other known
    parameters (paging, sorting), which are skipped. Anything else is an error."""
    skip = set(reserved)
    filters = []
    for name, raw in params:
        if name in skip:
            continue
        field, _, op_name = name.partition("__")
        if field not in fields:
            raise FilterError(f"unknown query parameter {name[:60]!r}")
        try:
            op = Op(op_name) if op_name else Op.EQ
        except ValueError:
            raise FilterError(f"{name}: unknown operator {op_name[:20]!r}") from None
        if op is Op.EQ and op_name:
            raise FilterError(f"{name}: use {field}={raw[:20]} for equality")
        kind = fields[field]
        if op in (Op.GT, Op.GTE, Op.LT, Op.LTE) and kind not in ORDERED:
            raise FilterError(f"{name}: {field} is not ordered")
        if op is Op.ISNULL:
            filters.append(Filter(field, op, _parse_bool(raw, name)))
        elif op is Op.IN:
            items = [item for item in raw.split(",") if item.strip()]
            if not items or len(items) > MAX_IN:
                raise FilterError(f"{name}: give 1 to {MAX_IN} comma-separated values")
            filters.append(Filter(field, op, tuple(_parse_value(kind, i, name) for i in items)))
        else:
            filters.append(Filter(field, op, _parse_value(kind, raw, name)))
    return filters
