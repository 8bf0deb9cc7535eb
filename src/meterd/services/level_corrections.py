"""Corrections of MAX, LATEST and UNIQUE_COUNT items: the periods they count on are
recounted from their events (``core/level_recount.py``), and ``correct.lua`` sets
the recounted figures in one atomic step ("plan").

What a recount reads, and why it is exact:

1. A **pause** on new flush batches (``flush:pause``, lapsing by itself): the log
   cannot change while the recount reads it, and the flush sequence, read after
   the pause, proves it (the script refuses if it moved: a flush in flight ended).
2. The **event log**: every item of the customer's feature timed inside the
   affected periods (those the item's old and new forms count on), streamed and
   folded (MAX, LATEST: one figure a period) or filtered (UNIQUE_COUNT: the items
   carrying the corrected value). Items with corrections are read with them.
3. The periods' **versions** (``v:<field>`` of the used hash, bumped by the script
   for every item counted on a level period, and by every level correction).
4. The **waiting events** (both waiting hashes, scanned): an item accepted before
   step 3 is in the log or here; one accepted after it moved a version, and the
   script then refuses (the round reads again).

Bounds: the log read stops at ``MAX_RECOUNT_ITEMS`` items (409: too many to
recount in one request), the scan refuses past ``MAX_WAITING_SCAN`` waiting events
(503: retry once the flush caught up), and a period that began before the log's
horizon (``METERD_EVENT_RETENTION``) is refused (409): the log no longer holds all
its events, so no recount of it is exact.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from meterd.core.burn_down import Candidate
from meterd.core.corrections import (
    MAX_CORRECTIONS,
    Audit,
    CorrectionKind,
    audit_of,
    correction_id,
    split_correction_id,
)
from meterd.core.domain import Aggregation, BillingType, EntitlementView
from meterd.core.errors import ConflictError, UnavailableError
from meterd.core.event_records import EventRecord, event_key, record_json
from meterd.core.level_recount import (
    Carrier,
    LevelFold,
    LevelItem,
    affected_fields,
    unique_plan,
)
from meterd.core.meters import Meter
from meterd.core.quantity import to_units
from meterd.core.redis_keys import period_field
from meterd.core.timeutil import epoch_micros, isoformat, month_start
from meterd.services.meters import distinct_value
from meterd.storage.corrections import CorrectionCounters, CorrectionLog, LoggedItem
from meterd.storage.resolution import decode_resolution
from meterd.storage.usage import UsageStore, parse_period_field

#: The most logged items one recount reads (a request's work stays bounded).
MAX_RECOUNT_ITEMS = 200_000
#: The most waiting events a recount scans; past it the flush is behind (503).
MAX_WAITING_SCAN = 200_000
#: How long a recount may hold flush batches back.
PAUSE_SECONDS = 30.0
#: Rounds of widening a UNIQUE_COUNT recount to the periods its carriers reach.
MAX_WIDENINGS = 3
#: Reads started again because a correction landed on the periods meanwhile.
MAX_ROUNDS = 4


class ResolutionMissing(UnavailableError):
    """The feature's resolution data is not cached: load it and read again (the
    service does; it reaches no caller)."""


@dataclass(slots=True)
class _Known:
    """One item of the feature as read: its original record fields, its corrections."""

    source: str
    id: str
    time: datetime
    received_at: datetime
    units: int
    target: uuid.UUID | None
    data: Mapping[str, Any]
    #: Read from the log (its other parts are read when its counts are needed).
    logged: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    corrections: dict[int, EventRecord] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Window:
    start: datetime
    end: datetime | None


@dataclass(frozen=True, slots=True)
class LevelTarget:
    """The item a level correction corrects: as it counts now, and its new form."""

    org: str
    customer: str
    source: str
    id: str
    meter: Meter
    old: LevelItem
    #: None: a void.
    new: LevelItem | None
    #: Who corrects (the audit of the recount records other items get).
    actor: str = "cli"


class LevelRecounter:
    """Builds the plan of one MAX, LATEST or UNIQUE_COUNT item's correction."""

    def __init__(
        self,
        counters: CorrectionCounters,
        log: CorrectionLog,
        usage: UsageStore,
        *,
        retention: timedelta,
    ) -> None:
        self.counters = counters
        self.log = log
        self.usage = usage
        self.retention = retention

    def views(self, org: str, customer: str, feature: str) -> tuple[str, list[EntitlementView]]:
        payload = self.counters.resolution_payload(org, customer, feature)
        if payload is None:
            raise ResolutionMissing(feature)
        return payload, decode_resolution(payload)

    def plan(self, target: LevelTarget, now: datetime) -> dict[str, Any]:
        """The script's plan (``correct.lua``): checks, then what to set. Read after
        the flush is paused and its sequence read."""
        payload, views = self.views(target.org, target.customer, target.meter.feature)
        cands = affected_fields(views, [target.old, target.new])
        if not cands:
            raise ConflictError(
                f"event item {target.id!r} counts on no period of its entitlements now:"
                " nothing to recount"
            )
        agg = target.meter.aggregation
        if agg is Aggregation.UNIQUE_COUNT:
            body = self._unique(target, views, cands, now)
        else:
            body = self._levels(target, views, cands, now)
        return {"f": cands[0].field, "rs": payload, **body}

    # -- MAX and LATEST -----------------------------------------------------------

    def _levels(
        self,
        target: LevelTarget,
        views: list[EntitlementView],
        cands: list[Candidate],
        now: datetime,
    ) -> dict[str, Any]:
        fields = frozenset(c.field for c in cands)
        start, end = self._window(cands, now)
        fold = LevelFold(target.meter.aggregation, views, fields)
        versions = self._read(target, start, end, fold)
        if target.new is not None:
            fold.add(target.new)
        flushed = self._flushed(fields, target.meter.scale)
        sets = []
        for cand in cands:
            figure = fold.figures[cand.field]
            latest = ""
            if figure.latest is not None:
                latest = f"{figure.latest[0]}\t{figure.latest[1]}"
            sets.append(
                [
                    cand.field,
                    str(figure.units),
                    str(flushed.get(cand.field, 0)),
                    str(_prepaid_limit(cand)),
                    latest,
                ]
            )
        return {
            "v": [[f, str(versions.get(f, 0))] for f in sorted(fields)],
            "set": sets,
            "latest": target.meter.aggregation is Aggregation.LATEST,
        }

    # -- UNIQUE_COUNT ---------------------------------------------------------------

    def _unique(
        self,
        target: LevelTarget,
        views: list[EntitlementView],
        cands: list[Candidate],
        now: datetime,
    ) -> dict[str, Any]:
        value = target.old.value
        assert value is not None
        periods = {c.field: (c.period.start, c.period.end) for c in cands}
        for _ in range(MAX_WIDENINGS + 1):
            carriers: list[Carrier] = []
            start, end = self._span(periods.values(), now)
            versions = self._read(target, start, end, None, carriers=carriers, value=value)
            plan = unique_plan(views, carriers)
            reached = dict(periods)
            for carrier in carriers:
                for cand in carrier.item.candidates(views):
                    reached.setdefault(cand.field, (cand.period.start, cand.period.end))
            if set(reached) <= set(periods):
                break
            periods = reached
        else:
            raise ConflictError(
                f"the value {value} is counted across more periods than one correction"
                " recounts; void the events one period at a time"
            )
        checked_fields = set(plan.unset)
        recount = [(c.item, self._record_key(target, c)) for c in plan.recount]
        new = target.new
        if new is not None and new.value != value:
            recount.append((new, ""))  # the new value, counted at the item's place
            checked_fields |= {c.field for c in new.candidates(views)}
        flushed = self._flushed(
            frozenset(f for _, held in plan.take_back for f in held), target.meter.scale
        )
        records: dict[str, str] = {}
        for carrier in [c for c, _ in plan.take_back] + list(plan.recount):
            key = self._record_key(target, carrier)
            if key:
                records[key] = self._recount_record(target, carrier, value, now)
        return {
            "v": [[f, str(versions.get(f, 0))] for f in sorted(checked_fields)],
            "tb": [
                [
                    self._record_key(target, carrier),
                    [[f, str(u), str(flushed.get(f, 0))] for f, u in held.items()],
                ]
                for carrier, held in plan.take_back
            ],
            "rc": [[key, record] for key, record in records.items()],
            "srem": [value, sorted(plan.unset)],
            "rep": [[*self._replayed(target, item), key] for item, key in recount],
        }

    @staticmethod
    def _record_key(target: LevelTarget, carrier: Carrier) -> str:
        """The pending events field of a carrier's recount record ("" for the
        corrected item: its own correction record)."""
        if carrier.ref is None:
            return ""
        source, item_id, number = carrier.ref
        return event_key(target.org, source, correction_id(item_id, number))

    @staticmethod
    def _recount_record(target: LevelTarget, carrier: Carrier, value: str, now: datetime) -> str:
        _, _, number = carrier.ref
        audit = Audit(
            CorrectionKind.RECOUNT,
            number,
            f"the value {value} counted again after a correction of"
            f" {target.source!r} {target.id!r}",
            target.actor,
            now,
        )
        item = carrier.item
        return "0:\t" + record_json(
            target.customer,
            target.meter.feature,
            item.time,
            now,
            audit.as_data(),
            target.meter.scale,
        )

    def _replayed(self, target: LevelTarget, item: LevelItem) -> list[str]:
        """An item counted again by the script's ``resolve`` (its record for the
        dimension filters)."""
        record = record_json(
            target.customer,
            target.meter.feature,
            item.time,
            item.received_at,
            item.data,
            target.meter.scale,
        )
        return [
            str(epoch_micros(item.time)),
            str(epoch_micros(month_start(item.time))),
            str(item.units),
            item.target.hex if item.target else "",
            item.key,
            record,
            item.value or "",
        ]

    # -- reading ----------------------------------------------------------------

    def _window(self, cands: list[Candidate], now: datetime) -> tuple[datetime, datetime | None]:
        return self._span(((c.period.start, c.period.end) for c in cands), now)

    def _span(
        self, periods: Iterable[tuple[datetime, datetime | None]], now: datetime
    ) -> tuple[datetime, datetime | None]:
        spans = list(periods)
        start = min(s for s, _ in spans)
        ends = [e for _, e in spans]
        end = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
        horizon = now - self.retention
        if start < horizon:
            raise ConflictError(
                f"the period began at {isoformat(start)}, before the event log's horizon"
                f" ({isoformat(horizon)}, METERD_EVENT_RETENTION): a MAX, LATEST or"
                " UNIQUE_COUNT correction recounts the period from its events, and the"
                " log no longer holds them all"
            )
        return start, end

    def _check_not_backfilled(
        self, target: LevelTarget, start: datetime, end: datetime | None
    ) -> None:
        if self.log.backfilled_in(target.org, target.customer, target.meter.feature, start, end):
            raise ConflictError(
                "the period holds history the backfill counted straight into SQL (a closed"
                " period, in the backfill's log only): a MAX, LATEST or UNIQUE_COUNT"
                " correction recounts the event log's events and would leave it out"
            )

    def _read(
        self,
        target: LevelTarget,
        start: datetime,
        end: datetime | None,
        fold: LevelFold | None,
        *,
        carriers: list[Carrier] | None = None,
        value: str | None = None,
    ) -> dict[str, int]:
        """Feed every other live item timed in ``[start, end)`` to ``fold`` (or, for a
        unique ``value``, collect its carriers with their counts); the versions read
        between the log and the scan.

        Items are folded as the log streams them, so memory stays bounded; an item
        with corrections is kept aside and folded in its last form. Its corrections
        are known before the stream: the logged ones by a first query, the waiting
        ones by a first scan (one made since is seen by the second scan, and the
        read starts again knowing it)."""
        org, customer, feature = target.org, target.customer, target.meter.feature
        window = _Window(start, end)
        self._check_not_backfilled(target, start, end)
        corrected = {(target.source, target.id)}
        for _ in range(MAX_ROUNDS):
            if fold is not None:
                fold.reset()  # a read that starts again folds every item again
            for row in self.log.items_of(org, customer, feature, start, end, corrections_only=True):
                split = split_correction_id(row.event_id)
                if split is not None:
                    corrected.add((row.source, split[0]))
            corrected |= {
                (r.source, s[0])
                for r in self._waiting(org, customer, feature, window)
                if (s := split_correction_id(r.id)) is not None
            }
            kept, logged = self._stream(target, window, corrected, fold, carriers, value)
            # the versions, then the waiting events: an item counted after the
            # versions were read moved one, and the script refuses
            versions = self.counters.versions(org, customer)
            waiting: list[tuple[tuple[str, str], int, EventRecord]] = []
            raced = False
            for record in self._waiting(org, customer, feature, window):
                split = split_correction_id(record.id)
                if split is None:
                    kept[(record.source, record.id)] = _waiting(record)
                    continue
                base = (record.source, split[0])
                waiting.append((base, split[1], record))
                raced = raced or base not in corrected
                corrected.add(base)
            if not raced:
                self._attach(org, target.meter.scale, kept, logged, waiting)
                self._fold_kept(target, kept, fold, carriers, value)
                return versions
        raise UnavailableError("corrections kept landing on these periods; retry")

    def _stream(
        self,
        target: LevelTarget,
        window: _Window,
        corrected: set[tuple[str, str]],
        fold: LevelFold | None,
        carriers: list[Carrier] | None,
        value: str | None,
    ) -> tuple[dict[tuple[str, str], _Known], dict[str, list[str]]]:
        """Stream the logged items: fold those without corrections; keep the others
        (and, for a unique value, its carriers); the logged corrections' ids."""
        org, meter = target.org, target.meter
        kept: dict[tuple[str, str], _Known] = {}
        logged: dict[str, list[str]] = {}
        rows = self.log.items_of(org, target.customer, meter.feature, window.start, window.end)
        for n, row in enumerate(rows):
            if n >= MAX_RECOUNT_ITEMS:
                raise ConflictError(
                    f"the periods hold more than {MAX_RECOUNT_ITEMS:,} events of"
                    f" {meter.feature!r} for this customer: too many to recount in one"
                    " correction"
                )
            if split_correction_id(row.event_id) is not None:
                logged.setdefault(row.source, []).append(row.event_id)
                continue
            key = (row.source, row.event_id)
            entry = _logged(row, meter.scale)
            if key in corrected:
                kept[key] = entry
                continue
            item, _ = _as_item(org, entry, meter)
            if fold is not None:
                fold.add(item)
            elif item.value == value:
                kept[key] = entry
        return kept, logged

    def _fold_kept(
        self,
        target: LevelTarget,
        kept: dict[tuple[str, str], _Known],
        fold: LevelFold | None,
        carriers: list[Carrier] | None,
        value: str | None,
    ) -> None:
        """Fold the kept items in their last form (or collect the value's carriers,
        the corrected item last, with what it counts now)."""
        org, meter = target.org, target.meter
        own = (target.source, target.id)
        if carriers is not None:
            self._count_logged(org, meter.scale, kept, value, meter, target)
        for key, entry in kept.items():
            if key == own:
                continue
            item, live = _as_item(org, entry, meter)
            if fold is not None:
                if live:
                    fold.add(item)
            elif carriers is not None and item.value == value:
                number = max(entry.corrections, default=0) + 1
                if number >= MAX_CORRECTIONS:
                    raise ConflictError(
                        f"event item {entry.id!r} carries {value} and has had the most"
                        " corrections it may take: void it first"
                    )
                carriers.append(Carrier(item, live, entry.counts, (key[0], key[1], number)))
        if carriers is not None:
            mine = kept.get(own)
            new = target.new
            stays = new is not None and new.value == value
            carriers.append(
                Carrier(
                    new if new is not None and stays else target.old,
                    stays,
                    mine.counts if mine is not None else {},
                )
            )

    def _waiting(
        self, org: str, customer: str, feature: str, window: _Window
    ) -> Iterator[EventRecord]:
        """The waiting records of the feature timed in the window (bounded scan)."""
        waiting = self.counters.waiting_count()
        if waiting > MAX_WAITING_SCAN:
            raise UnavailableError(
                f"{waiting:,} events wait for a flush: a MAX, LATEST or UNIQUE_COUNT"
                " correction reads them all; retry once the flush has caught up"
            )
        for record in self.counters.waiting_of(org, customer, feature):
            if window.start <= record.time and (window.end is None or record.time < window.end):
                yield record

    def _attach(
        self,
        org: str,
        scale: int,
        kept: dict[tuple[str, str], _Known],
        logged: Mapping[str, list[str]],
        waiting: list[tuple[tuple[str, str], int, EventRecord]],
    ) -> None:
        """Attach every correction to its kept item (logged ones read whole)."""
        for source, ids in logged.items():
            for logged_id, record in self.log.records(org, source, ids, scale).items():
                split = split_correction_id(logged_id)
                entry = kept.get((source, split[0])) if split else None
                if entry is not None and split is not None:
                    entry.corrections[split[1]] = record
        for base, number, record in waiting:
            entry = kept.get(base)
            if entry is not None:
                entry.corrections[number] = record

    def _count_logged(
        self,
        org: str,
        scale: int,
        known: dict[tuple[str, str], _Known],
        value: str | None,
        meter: Meter,
        target: LevelTarget,
    ) -> None:
        """UNIQUE_COUNT: the units every carrier of ``value`` counts, all its parts
        and its corrections' (a logged item was read by its first part only)."""
        by_source: dict[str, list[str]] = {}
        own = (target.source, target.id)
        for key, entry in known.items():
            item, _ = _as_item(org, entry, meter)
            if item.value == value or key == own:
                if entry.logged:
                    by_source.setdefault(key[0], []).append(key[1])
                for record in entry.corrections.values():
                    for part in record.allocations:
                        name = period_field(part.entitlement_id, part.period_start)
                        entry.counts[name] = entry.counts.get(name, 0) + part.units
        for source, ids in by_source.items():
            for logged_id, record in self.log.records(org, source, ids, scale).items():
                entry = known[(source, logged_id)]
                for part in record.allocations:
                    name = period_field(part.entitlement_id, part.period_start)
                    entry.counts[name] = entry.counts.get(name, 0) + part.units

    def _flushed(self, fields: frozenset[str], scale: int) -> dict[str, int]:
        keys = {parse_period_field(f): f for f in fields}
        values, _ = self.usage.flushed_consumption(list(keys), None)
        return {keys[k]: to_units(Decimal(v), scale) for k, v in values.items() if k in keys}


def _prepaid_limit(cand: Candidate) -> int:
    """The limit threshold crossings are judged on (-1: none, as the script's
    ``prepaid_limits``)."""
    if cand.view.billing_type is BillingType.PAY_PER_USE or cand.limit <= 0:
        return -1
    return cand.limit


def _logged(row: LoggedItem, scale: int) -> _Known:
    return _Known(
        source=row.source,
        id=row.event_id,
        time=row.event_time,
        received_at=row.received_at,
        units=to_units(Decimal(row.event_quantity), scale),
        target=row.target_id,
        data=row.data or {},
        logged=True,
    )


def _waiting(record: EventRecord) -> _Known:
    known = _Known(
        source=record.source,
        id=record.id,
        time=record.time,
        received_at=record.received_at,
        units=record.units,
        target=record.target,
        data=record.data,
    )
    for part in record.allocations:
        name = period_field(part.entitlement_id, part.period_start)
        known.counts[name] = known.counts.get(name, 0) + part.units
    return known


def _as_item(org: str, entry: _Known, meter: Meter) -> tuple[LevelItem, bool]:
    """The item as it counts now (its last amend applied) and whether it is live."""
    units, data, target, live = entry.units, entry.data, entry.target, True
    for n in sorted(entry.corrections):
        record = entry.corrections[n]
        audit = audit_of(record.data) or {}
        if audit.get("kind") == "void":
            live = False
        elif audit.get("kind") == "amend":
            units, target = record.units, record.target
            data = record.data.get("data") or {}
    unique = meter.aggregation is Aggregation.UNIQUE_COUNT
    item = LevelItem(
        key=event_key(org, entry.source, entry.id),
        time=entry.time,
        received_at=entry.received_at,
        units=units,
        data=data,
        target=target,
        value=distinct_value(data, meter) if unique else None,
    )
    return item, live
