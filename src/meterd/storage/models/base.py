"""The declarative base and the column types every table uses.

Quantities are exact: ``Numeric(38, 6)`` on PostgreSQL; on SQLite, whose
NUMERIC affinity would turn them into doubles, integer micro-units. The
``ExactDecimal`` type hides the difference: Python always sees ``Decimal``.
Datetimes are UTC-aware on every backend (``UtcDateTime``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Numeric, TypeDecorator
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeEngine

from meterd.core.quantity import from_micros, to_micros
from meterd.core.timeutil import as_utc
from meterd.storage.exact import decode_micros, encode_micros


class ExactDecimal(TypeDecorator[Decimal]):
    """Decimal with six fractional digits, stored exactly on every backend:
    ``Numeric(38, 6)`` on PostgreSQL, a 16-byte offset-binary BLOB of micro-units
    on SQLite (``storage/exact.py``; the column is declared BIGINT there, and
    SQLite keeps a BLOB as it is, whatever the column's declared type)."""

    impl = Numeric(38, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(38, 6, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return encode_micros(to_micros(Decimal(value)))
        return Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return from_micros(decode_micros(value))
        return Decimal(value).quantize(Decimal("0.000001"))


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC-aware ones")
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return as_utc(value) if value is not None else None


class Base(DeclarativeBase):
    pass
