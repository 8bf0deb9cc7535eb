"""Opaque cursors for keyset pagination.

A cursor carries the sort key and id of the row a page ended (or began) at,
and the direction to read from there, as URL-safe base64 of a small JSON
document. It is opaque to clients (they only pass back ``next``/``previous``);
a cursor that does not decode, or was made for another sort, is a
``CursorError`` (400).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from meterd.errors import InvalidError


class CursorError(InvalidError):
    """A cursor that cannot be used."""


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
    tag, raw = tagged
    if tag == "n":
        return None
    if tag == "t":
        return datetime.fromisoformat(raw)
    if tag == "d":
        return Decimal(raw)
    if tag == "u":
        return uuid.UUID(raw)
    if tag in ("b", "i"):
        return raw
    if tag == "s":
        return str(raw)
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


def decode(text: str, sort: str) -> Cursor:
    try:
        padded = text + "=" * (-len(text) % 4)
        doc = json.loads(base64.urlsafe_b64decode(padded.encode()))
        cursor = Cursor(
            sort=str(doc["s"]),
            value=_decode_value(doc["v"]),
            row_id=str(doc["i"]),
            forward=bool(doc["f"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise CursorError("the cursor is not valid: pass back a next or previous value") from None
    if cursor.sort != sort:
        raise CursorError("the cursor belongs to another sort order: start from the first page")
    return cursor
