"""Terms on the calendar: where each renewal of an entitlement begins and ends.

A term of N days or weeks is a duration. A term of N months or years is
calendar arithmetic from the entitlement's *anchor* (its original start),
clamped to the month's end: a monthly term anchored on Jan 31 renews on
Feb 28 (29 in a leap year), Mar 31, Apr 30, ...; a yearly one anchored on
Feb 29 renews on Feb 28 three years running, then Feb 29 again. Boundary ``k``
is always computed from the anchor (``anchor + k * term``), never from the
previous boundary, so nothing drifts.

``ingest.lua`` does the same arithmetic on epoch microseconds (its
``term_start``); ``tests/test_terms.py`` holds the two together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class TermUnit(StrEnum):
    DAY = "DAY"
    MONTH = "MONTH"
    YEAR = "YEAR"
    WEEK = "WEEK"

    @property
    def code(self) -> int:
        """The unit's integer in the workspace seed page (0 DAY, 1 MONTH, 2 YEAR, 3 WEEK)."""
        return list(TermUnit).index(self)


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` plus whole calendar months, the day clamped to the month's length."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    for day in (moment.day, 30, 29, 28):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise ValueError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Term:
    """The length of one term: calendar months, or an exact duration (one of them)."""

    months: int = 0
    length: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if (self.months > 0) == (self.length > timedelta(0)):
            raise ValueError("a term is a positive number of months or a positive duration")

    @classmethod
    def of(cls, value: int, unit: TermUnit) -> Term:
        if value <= 0:
            raise ValueError("a term must be positive")
        if unit is TermUnit.MONTH:
            return cls(months=value)
        if unit is TermUnit.YEAR:
            return cls(months=12 * value)
        days = value * 7 if unit is TermUnit.WEEK else value
        return cls(length=timedelta(days=days))

    @classmethod
    def between(cls, start: datetime, end: datetime) -> Term:
        """The term that runs from ``start`` to ``end``: whole calendar months when
        ``end`` is such a boundary of ``start`` (Jan 31 -> Feb 28 is one month),
        else the exact duration."""
        if end <= start:
            raise ValueError("a term must end after it starts")
        months = (end.year - start.year) * 12 + end.month - start.month
        for guess in (months - 1, months, months + 1):
            if guess > 0 and add_months(start, guess) == end:
                return cls(months=guess)
        return cls(length=end - start)

    def start(self, anchor: datetime, k: int) -> datetime:
        """Boundary ``k``: the start of the ``k``-th term after the anchor (0: the anchor)."""
        if self.months:
            return add_months(anchor, k * self.months)
        return anchor + k * self.length

    def index_at(self, anchor: datetime, moment: datetime) -> int:
        """The ``k`` whose term contains ``moment``: boundary k <= moment < boundary k+1."""
        if not self.months:
            return (moment - anchor) // self.length
        elapsed = (moment.year - anchor.year) * 12 + moment.month - anchor.month
        k = elapsed // self.months
        while self.start(anchor, k) > moment:
            k -= 1
        while self.start(anchor, k + 1) <= moment:
            k += 1
        return k

    def end_after(self, anchor: datetime, moment: datetime) -> datetime:
        """The first boundary strictly after ``moment``."""
        return self.start(anchor, self.index_at(anchor, moment) + 1)
