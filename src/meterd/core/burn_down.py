"""Which periods an item burns down, and a level's share of each: the Python twin of
``lua/ingest/resolve.lua``'s candidates and ``lua/ingest/burn_down.lua``'s
``level_share``.

Corrections of MAX, LATEST and UNIQUE_COUNT items recount a period from its events
(``core/level_recount.py``): each event's share of the period must then be the
very figure the script gave it, so the rules are the script's, judged on the same
entitlement views (decoded from the resolution data the script reads).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from meterd.core.domain import EntitlementView, Period, Status
from meterd.core.lifecycle import period_at, status_at, usable_at
from meterd.core.meters import matches
from meterd.core.quantity import to_units
from meterd.core.redis_keys import period_field


@dataclass(frozen=True, slots=True)
class Candidate:
    """One period an item may count on, in burn-down order."""

    view: EntitlementView
    period: Period

    @property
    def field(self) -> str:
        """The used hash field of the period (``<ent>:<period start>``)."""
        return period_field(self.view.id, self.period.start)

    @property
    def limit(self) -> int:
        """The period's limit in units of the feature's scale; -1 unlimited."""
        quantity = self.period.quantity
        return -1 if quantity is None else to_units(quantity, self.view.scale)


def candidates_at(
    views: Sequence[EntitlementView],
    time: datetime,
    data: Mapping[str, Any] | None,
    target: uuid.UUID | None,
) -> tuple[list[Candidate], bool]:
    """The periods an item timed ``time`` burns down, in order (``views`` in burn-down
    order, as the resolution data lists them): the target only, usable at ``time``,
    its dimensions matching; and whether a suspension refused it."""
    found: list[Candidate] = []
    suspended = False
    for view in views:
        if target is not None and view.id != target:
            continue
        if not matches(data or {}, view.filters):
            continue
        if status_at(view, time) is Status.SUSPENDED:
            until = view.usable_until
            if view.starts_at <= time and (until is None or time < until):
                suspended = True
            continue
        if not usable_at(view, time):
            continue
        period = period_at(view, time)
        if period is None:
            continue
        found.append(Candidate(view, period))
    return found, suspended


def level_share(limits: Sequence[int], j: int, level: int) -> int:
    """Candidate ``j``'s share of a MAX or LATEST level: shared down the candidates
    like a sum (each takes up to its limit, -1 unlimited; the last takes the rest)."""
    left = level
    for k in range(j):
        limit = limits[k]
        if limit < 0 or limit >= left:
            return 0
        left -= limit
    limit = limits[j]
    if j < len(limits) - 1 and 0 <= limit < left:
        return limit
    return left
