"""Opaque cursors for keyset pagination.

A cursor carries the sort key and id of the row a page ended (or began) at,
and the direction to read from there, as URL-safe base64 of a small JSON
document. It is opaque to clients (they only pass back ``next``/``previous``);
a cursor that does not decode, was made for another sort, or carries a value
meterd could not have written (a value of another type than the sort's, a
date-time outside years 1 to 9999 in UTC, an integer past 64 bits, a row id
that is not a UUID) is a ``CursorError`` (400): cursors are not signed, so
nothing in one reaches the database unchecked.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from meterd.core.errors import InvalidError
from meterd.core.timeutil import as_utc


class CursorError(InvalidError):
    """A cursor that cannot be used."""


_INT64 = range(-(2**63), 2**63)
_MAX_TEXT = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INVALID = "the cursor is not valid: pass back a next or previous value"


@dataclass(frozen=True, slots=True)
class Cursor:
    #: The sort this cursor belongs to, e.g. "created_at:asc".
    sort: str
    #: The sort value and id of the boundary row.
    value: Any
    row_id: str
    #: True: rows after the boundary (next page); False: rows before it (previous).
    forward: bool


def _encode_value(value: Any) -> list[Any]:
    if value is None:
        return ["n", None]
    if isinstance(value, datetime):
        return ["t", value.isoformat()]
    if isinstance(value, Decimal):
        return ["d", str(value)]
    if isinstance(value, uuid.UUID):
        return ["u", str(value)]
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", value]
    return ["s", str(value)]


def _decode_value(tagged: Any) -> Any:
    """The value ``_encode_value`` wrote, checked as strictly as it was written;
    anything else raises (``ValueError``, ``ArithmeticError``, ``TypeError``)."""
    tag, raw = tagged
    if tag == "n" and raw is None:
        return None
    if tag == "t" and isinstance(raw, str):
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return as_utc(moment)  # OverflowError outside years 1 to 9999 in UTC
    if tag == "d" and isinstance(raw, str) and len(raw) <= 60:
        number = Decimal(raw)
        if not number.is_finite():
            raise ValueError("not finite")
        return number
    if tag == "u" and isinstance(raw, str):
        return uuid.UUID(raw)
    if tag == "b" and isinstance(raw, bool):
        return raw
    if tag == "i" and isinstance(raw, int) and not isinstance(raw, bool) and raw in _INT64:
        return raw
    if tag == "s" and isinstance(raw, str) and len(raw) <= _MAX_TEXT and not _CONTROL.search(raw):
        return raw
    raise ValueError(tag)


def encode(cursor: Cursor) -> str:
    doc = {
        "s": cursor.sort,
        "v": _encode_value(cursor.value),
        "i": cursor.row_id,
        "f": cursor.forward,
    }
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str, sort: str, value_type: type | None = None) -> Cursor:
    """The cursor ``text`` of the sort ``sort``; ``value_type``: the type of the sort
    column's values (the boundary value must be one)."""
    try:
        padded = text + "=" * (-len(text) % 4)
        doc = json.loads(base64.urlsafe_b64decode(padded.encode()))
        cursor = Cursor(
            sort=str(doc["s"]),
            value=_decode_value(doc["v"]),
            row_id=str(uuid.UUID(doc["i"])),
            forward=bool(doc["f"]),
        )
    except (ValueError, ArithmeticError, LookupError, TypeError, AttributeError, binascii.Error):
        raise CursorError(_INVALID) from None
    if cursor.sort != sort:
        raise CursorError("the cursor belongs to another sort order: start from the first page")
    if value_type is not None and (
        not isinstance(cursor.value, value_type)
        or (isinstance(cursor.value, bool) and value_type is not bool)
    ):
        raise CursorError(_INVALID)
    return cursor
