"""Usage over time as text: a bar chart for the terminal and CSV (``meterd usage``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from meterd.core.quantity import format_quantity

#: Eighths of a block: the bar's last cell shows the remainder.
_BLOCKS = " ▏▎▍▌▋▊▉█"
CSV_COLUMNS = (
    "window_start",
    "window_end",
    "customer_id",
    "feature",
    "entitlement_id",
    "quantity",
    "events",
    "filters",
)


class Row(Protocol):
    @property
    def window_start(self) -> object: ...
    @property
    def window_end(self) -> object: ...
    @property
    def customer_id(self) -> str | None: ...
    @property
    def feature(self) -> str | None: ...
    @property
    def entitlement_id(self) -> object: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def events(self) -> int: ...
    @property
    def filters(self) -> Mapping[str, Any] | None: ...


def bar(quantity: Decimal, largest: Decimal, width: int) -> str:
    """A bar of ``width`` cells at most, in eighths of a cell, proportional to
    ``quantity / largest`` (exact: no float ever touches a quantity)."""
    if largest <= 0 or quantity <= 0:
        return ""
    eighths = int(quantity * width * 8 / largest)
    full, rest = divmod(eighths, 8)
    return "█" * full + (_BLOCKS[rest] if rest else "")


def label(row: Row) -> str:
    parts = [_text(row.window_start)]
    for extra in (row.customer_id, row.feature, row.entitlement_id):
        if extra is not None:
            parts.append(str(extra))
    if row.filters:
        parts.append(" ".join(f"{k}={json.dumps(v)}" for k, v in sorted(row.filters.items())))
    return "  ".join(parts)


def chart(rows: Sequence[Row], width: int = 40) -> list[str]:
    """One line per row: label, bar, exact quantity and events."""
    if not rows:
        return []
    largest = max(r.quantity for r in rows)
    labels = [label(r) for r in rows]
    pad = max(len(text) for text in labels)
    lines = []
    for text, r in zip(labels, rows, strict=True):
        drawn = bar(r.quantity, largest, width).ljust(width)
        lines.append(
            f"{text.ljust(pad)}  {drawn}  {format_quantity(r.quantity)}  ({r.events:,} events)"
        )
    return lines


def _text(moment: object) -> str:
    return moment.isoformat() if isinstance(moment, datetime) else str(moment)


def to_csv(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                _text(r.window_start), _text(r.window_end), r.customer_id or "", r.feature or "",
                r.entitlement_id or "", format_quantity(r.quantity), r.events,
                json.dumps(dict(r.filters), sort_keys=True) if r.filters else "",
            ]
        )  # fmt: skip
    return out.getvalue()
