"""Exact decimals on SQLite, whose numbers are 64-bit integers or doubles.

PostgreSQL keeps quantities as ``Numeric(38, 6)``. SQLite has no exact type
wide enough: an INTEGER of micro-units stops at 9.2 x 10^12 units, and its
NUMERIC is a double. So on SQLite a quantity is a 16-byte BLOB: its integer
micro-units plus 2^127, big-endian (offset binary). Any value of
``Numeric(38, 6)`` fits, and SQLite compares BLOBs with ``memcmp``, which
orders these exactly as the numbers they hold, negative ones included. Filters
(``quantity__gt``), sort keys and ``IN`` lists therefore work in SQL unchanged.

SQL arithmetic on them goes through two functions registered on every SQLite
connection (``register``): ``exact_add(a, b)`` and the aggregate
``exact_sum(x)``. The SQLAlchemy constructs ``exact_add`` and ``exact_sum``
compile to those on SQLite and to ``+`` and ``sum`` elsewhere. An integer found
in such a column (a row written before migration 0011) is read as micro-units.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeEngine

#: Offset binary: micro-units + 2^127 as 16 unsigned big-endian bytes.
WIDTH = 16
OFFSET = 1 << (8 * WIDTH - 1)


def encode_micros(micros: int) -> bytes:
    """Integer micro-units as the 16-byte BLOB SQLite keeps (``OverflowError`` past
    +-2^127, far beyond ``Numeric(38, 6)``)."""
    return (micros + OFFSET).to_bytes(WIDTH, "big")


def decode_micros(value: Any) -> int:
    """Micro-units of a stored value: a BLOB of ``encode_micros``, or an integer
    written before migration 0011."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return int.from_bytes(bytes(value), "big") - OFFSET
    return int(value)


def _add(a: Any, b: Any) -> bytes | None:
    if a is None or b is None:
        return None
    return encode_micros(decode_micros(a) + decode_micros(b))


class _Sum:
    """SQL ``sum`` over exact BLOBs: NULLs skipped, NULL when there is nothing."""

    def __init__(self) -> None:
        self.total: int | None = None

    def step(self, value: Any) -> None:
        if value is not None:
            self.total = (self.total or 0) + decode_micros(value)

    def finalize(self) -> bytes | None:
        return None if self.total is None else encode_micros(self.total)


def register(connection: sqlite3.Connection) -> None:
    """Give a SQLite connection ``exact_add`` and ``exact_sum``."""
    connection.create_function("exact_add", 2, _add, deterministic=True)
    connection.create_aggregate("exact_sum", 1, _Sum)  # type: ignore[arg-type]


class exact_add(FunctionElement[Any]):
    """``a + b`` for quantity columns, exact on every backend."""

    name = "exact_add"
    inherit_cache = True

    def __init__(self, a: Any, b: Any, type_: TypeEngine[Any]) -> None:
        super().__init__(a, b)
        self.type = type_


class exact_sum(FunctionElement[Any]):
    """``sum(x)`` of a quantity column, exact on every backend."""

    name = "exact_sum"
    inherit_cache = True

    def __init__(self, x: Any, type_: TypeEngine[Any]) -> None:
        super().__init__(x)
        self.type = type_


@compiles(exact_add)
def _add_elsewhere(element: exact_add, compiler: SQLCompiler, **kw: Any) -> str:
    a, b = list(element.clauses)
    return f"({compiler.process(a, **kw)} + {compiler.process(b, **kw)})"


@compiles(exact_add, "sqlite")
def _add_on_sqlite(element: exact_add, compiler: SQLCompiler, **kw: Any) -> str:
    return f"exact_add({compiler.process(element.clauses, **kw)})"


@compiles(exact_sum)
def _sum_elsewhere(element: exact_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"sum({compiler.process(element.clauses, **kw)})"


@compiles(exact_sum, "sqlite")
def _sum_on_sqlite(element: exact_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"exact_sum({compiler.process(element.clauses, **kw)})"
