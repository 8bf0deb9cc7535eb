"""What a correction (void or amend) of an accepted event is, in the log and in Redis.

A correction is a compensating entry: a record of its own, logged beside the
event it corrects, whose parts move the event's units (negative: taken back;
positive: an amend's new units counted through the burn-down). Its identity is
the corrected item's id, U+001E and its number (1, 2, ... for each correction of
that item), so it passes through the pending events hash, the flush and the log
like any event: exactly once, by the same machinery. The audit (what, who, when,
why, and an amend's new ``data``) is the record's data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from meterd.core.timeutil import isoformat

#: Between a corrected item's id and the correction's number (an event id holds
#: printable text only; U+001F already separates a raw event's item).
CORRECTION_SEPARATOR = "\x1e"
#: The most corrections one event item may take (each is a log lookup when the
#: next one is made): past it, void the event and send a new one.
MAX_CORRECTIONS = 32
#: The key of the audit in a correction record's data.
AUDIT_KEY = "correction"


class CorrectionKind(StrEnum):
    VOID = "void"
    AMEND = "amend"
    #: A UNIQUE_COUNT item whose value's unit moved because another item carrying the
    #: same value was corrected (its units taken back, or counted again in its place).
    RECOUNT = "recount"


def correction_id(item_id: str, number: int) -> str:
    """The logged id of correction ``number`` of an item."""
    return f"{item_id}{CORRECTION_SEPARATOR}{number}"


def split_correction_id(logged_id: str) -> tuple[str, int] | None:
    """(the corrected item's id, the number) of a correction's id; None for an event."""
    head, sep, tail = logged_id.rpartition(CORRECTION_SEPARATOR)
    if not sep or not tail.isdigit():
        return None
    return head, int(tail)


@dataclass(frozen=True, slots=True)
class Audit:
    """Who corrected an event, when, why, and how."""

    kind: CorrectionKind
    number: int
    reason: str
    #: The API key (``key:<id>:<name>``) or ``cli``.
    actor: str
    at: datetime
    #: An amend's new data; None for a void.
    data: Mapping[str, Any] | None = None

    def as_data(self) -> dict[str, Any]:
        """The correction record's ``data``: the audit, and an amend's new data."""
        return {
            AUDIT_KEY: {
                "kind": self.kind.value,
                "number": self.number,
                "reason": self.reason,
                "actor": self.actor,
                "at": isoformat(self.at),
            },
            "data": dict(self.data) if self.data is not None else None,
        }


def audit_of(data: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The audit part of a logged correction's data (None for an event's data)."""
    if not isinstance(data, Mapping):
        return None
    audit = data.get(AUDIT_KEY)
    return audit if isinstance(audit, Mapping) and "kind" in audit else None
