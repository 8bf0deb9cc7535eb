"""Recounting a MAX, LATEST or UNIQUE_COUNT period without one item (a void) or with
its new form (an amend): the figures a correction sets, from the period's events.

A sum is corrected by a difference; these are not sums, so their periods are
recounted by the script's own rules (``core/burn_down.py``, the twin of
``lua/ingest/resolve.lua``) over the items the period counted, read from the
event log and the waiting events:

* **MAX**: a period's figure is the largest share any live item gives it.
* **LATEST**: the share of the latest live item (by event time, then event key)
  among those the period takes; that item becomes the period's latest sample.
* **UNIQUE_COUNT**: the corrected value's units are taken back from every period
  that counts them, the value leaves those periods' sets, and the live items that
  carry the value are counted again in the order they were accepted (the script's
  burn-down and sets, so each counts only where no earlier one counted it). Other
  values are untouched.

Pure: the caller reads the items and applies the plan atomically (``correct.lua``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meterd.core.burn_down import Candidate, candidates_at, level_share
from meterd.core.domain import Aggregation, EntitlementView
from meterd.core.timeutil import epoch_micros


@dataclass(frozen=True, slots=True)
class LevelItem:
    """One item of the feature, as it counts now (its last amend applied)."""

    #: The pending events field of the item ("<org>:<len>:<source>:<id>"): LATEST's
    #: tie-break and the order of acceptance after ``received_at``.
    key: str
    time: datetime
    received_at: datetime
    units: int
    data: Mapping[str, Any]
    target: uuid.UUID | None
    #: UNIQUE_COUNT: the distinct value (JSON text); None otherwise.
    value: str | None = None

    def candidates(self, views: Sequence[EntitlementView]) -> list[Candidate]:
        return candidates_at(views, self.time, self.data, self.target)[0]


@dataclass(slots=True)
class LevelFigure:
    """A period's recounted figure (units) and, for LATEST, its latest sample."""

    units: int = 0
    latest: tuple[int, str] | None = None


@dataclass(slots=True)
class LevelFold:
    """MAX and LATEST: the figures of ``fields`` folded item by item (bounded memory:
    one figure a field, whatever the number of items)."""

    aggregation: Aggregation
    views: Sequence[EntitlementView]
    fields: frozenset[str]
    figures: dict[str, LevelFigure] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start again (a read that starts again folds every item again)."""
        self.figures = {f: LevelFigure() for f in self.fields}

    def add(self, item: LevelItem) -> None:
        cands = item.candidates(self.views)
        limits = [c.limit for c in cands]
        for j, cand in enumerate(cands):
            figure = self.figures.get(cand.field)
            if figure is None:
                continue
            share = level_share(limits, j, item.units)
            if self.aggregation is Aggregation.MAX:
                figure.units = max(figure.units, share)
                continue
            seen = (epoch_micros(item.time), item.key)
            if figure.latest is None or seen > figure.latest:
                figure.latest = seen
                figure.units = share


def affected_fields(
    views: Sequence[EntitlementView], items: Iterable[LevelItem | None]
) -> list[Candidate]:
    """The periods an item's old and new forms count on (each once, in order)."""
    found: dict[str, Candidate] = {}
    for item in items:
        if item is not None:
            for cand in item.candidates(views):
                found.setdefault(cand.field, cand)
    return list(found.values())


@dataclass(frozen=True, slots=True)
class Carrier:
    """An item that carries (or carried) the corrected value."""

    item: LevelItem
    #: Live after the correction (a voided one, or the corrected item's old form, not).
    live: bool
    #: The units its records count now, by period field (its corrections' included):
    #: the value's units it holds.
    counts: Mapping[str, int]
    #: Who writes its moves: None for the corrected item (its own correction record),
    #: else the caller's handle for a recount record of this item.
    ref: Any = None


@dataclass(frozen=True, slots=True)
class UniquePlan:
    """What a UNIQUE_COUNT correction does to one value."""

    #: Each carrier's units taken back (every unit of the value: it is counted again
    #: below), by period field.
    take_back: tuple[tuple[Carrier, Mapping[str, int]], ...]
    #: The periods whose sets lose the value before it is counted again.
    unset: frozenset[str]
    #: The live carriers to count again in order of acceptance (the first of each set
    #: of candidate periods: a later one would find the value counted).
    recount: tuple[Carrier, ...]


def unique_plan(views: Sequence[EntitlementView], carriers: Iterable[Carrier]) -> UniquePlan:
    """The plan for one value from every item that carries it. Each carrier's units
    are taken back in its own records and counted again for the carrier that counts
    them now, so an item's records only ever hold its own value's units (a later
    correction of it takes back exactly those)."""
    take_back: list[tuple[Carrier, Mapping[str, int]]] = []
    unset: set[str] = set()
    live: list[tuple[Carrier, tuple[str, ...]]] = []
    for carrier in carriers:
        held = {k: v for k, v in carrier.counts.items() if v != 0}
        if held:
            take_back.append((carrier, held))
        fields = tuple(c.field for c in carrier.item.candidates(views))
        unset.update(fields)
        unset.update(held)
        if carrier.live and fields:
            live.append((carrier, fields))
    live.sort(key=lambda pair: (pair[0].item.received_at, pair[0].item.key))
    chosen: dict[tuple[str, ...], Carrier] = {}
    for carrier, fields in live:
        chosen.setdefault(fields, carrier)
    return UniquePlan(
        take_back=tuple(take_back),
        unset=frozenset(unset),
        recount=tuple(sorted(chosen.values(), key=lambda c: (c.item.received_at, c.item.key))),
    )
