"""Corrections: void or amend an accepted event, exactly once, audited.

A correction is a compensating entry (``core/corrections.py``): this service
reads what the event's items count now (the original, waiting in Redis or in
the log, plus every correction already made), and writes the next correction
through ``correct.lua``, which moves the used totals and the pending hash and
stores the correction's record for the flush in one atomic call. The flush then
carries it to ``usage_periods``, the event log and the rollups exactly once, as
it carries any event.

Exactly once under retries and races: the records are read after the flush
sequence, and the script refuses if the sequence moved (an event or a
correction moved from Redis to the log under the read) or if the correction's
number is already taken (a racing call made it first); either way the state is
read again, and a second void then finds the event void (409).

A SUM or COUNT item is corrected by a difference. A UNIQUE_COUNT set and a MAX or
LATEST level cannot be moved by one: their periods are recounted from their events
without the item (or with its new form), ``services/level_corrections.py``; the
script then sets the recounted figures, under the same checks.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from meterd.core.corrections import (
    MAX_CORRECTIONS,
    Audit,
    CorrectionKind,
    audit_of,
    correction_id,
)
from meterd.core.domain import Aggregation
from meterd.core.errors import ConflictError, InvalidError, NotFoundError, UnavailableError
from meterd.core.event_parsing import parse_event
from meterd.core.event_records import EventRecord, event_key, record_json
from meterd.core.events import USAGE_EVENT_TYPE, InvalidEvent, UsageEvent
from meterd.core.level_recount import LevelItem
from meterd.core.meters import Meter, item_id
from meterd.core.quantity import from_units, to_units
from meterd.core.redis_keys import period_field
from meterd.core.timeutil import isoformat, month_start
from meterd.services.level_corrections import (
    PAUSE_SECONDS,
    LevelRecounter,
    LevelTarget,
    ResolutionMissing,
)
from meterd.services.meters import MeterCatalog, distinct_value, items_of
from meterd.services.resolution import ResolutionCache
from meterd.storage.corrections import (
    CorrectionCall,
    CorrectionCounters,
    CorrectionLog,
    record_from_rows,
)
from meterd.storage.counters import CounterStoreError
from meterd.storage.models import EventLogRow
from meterd.storage.usage import UsageStore, parse_period_field

#: Reading again after a flush moved the records or a racing call took the number
#: more than this many times: give up for now (503; the caller retries).
MAX_ROUNDS = 8
#: The aggregations whose counts a difference corrects.
SUBTRACTABLE = frozenset({Aggregation.SUM, Aggregation.COUNT})


class CorrectionRetryError(UnavailableError):
    """Flushes or racing corrections kept moving the event's records; retry."""


@dataclass(frozen=True, slots=True)
class CorrectionPart:
    """What one correction moved on one period of one entitlement (negative: taken
    back)."""

    feature: str
    entitlement_id: uuid.UUID
    period_start: datetime
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class Correction:
    """A correction as made (or, for an amend retried with the same data and
    reason, as made before)."""

    kind: CorrectionKind
    source: str
    id: str
    reason: str
    actor: str
    at: datetime
    #: The corrected items' correction numbers (a usage event has one item).
    numbers: tuple[int, ...]
    parts: tuple[CorrectionPart, ...]
    data: Mapping[str, Any] | None = None


@dataclass(slots=True)
class _Item:
    """One item of the event (the event itself for a usage event), as it counts now."""

    id: str
    feature: str
    customer: str
    time: datetime
    scale: int
    target: uuid.UUID | None
    data: Mapping[str, Any]
    #: Units as counted now (an amend's), and when the original was accepted.
    units: int
    received_at: datetime
    #: Units by period field: the original's allocation plus every correction's.
    counts: dict[str, int] = field(default_factory=dict)
    #: Corrections made so far, and the last one's audit and record.
    made: int = 0
    last_audit: Mapping[str, Any] | None = None
    last: EventRecord | None = None

    def level(self, org: str, source: str, meter: Meter) -> LevelItem:
        """The item as a level recount sees it (as it counts now)."""
        unique = meter.aggregation is Aggregation.UNIQUE_COUNT
        return LevelItem(
            key=event_key(org, source, self.id),
            time=self.time,
            received_at=self.received_at,
            units=self.units,
            data=self.data,
            target=self.target,
            value=distinct_value(self.data, meter) if unique else None,
        )

    @property
    def voided(self) -> bool:
        return self.last_audit is not None and self.last_audit.get("kind") == "void"

    def add(self, record: EventRecord) -> None:
        for part in record.allocations:
            name = period_field(part.entitlement_id, part.period_start)
            self.counts[name] = self.counts.get(name, 0) + part.units


class CorrectionService:
    def __init__(
        self,
        counters: CorrectionCounters,
        log: CorrectionLog,
        usage: UsageStore,
        resolution: ResolutionCache,
        meters: MeterCatalog,
        *,
        late_window: timedelta,
        retention: timedelta,
    ) -> None:
        self.counters = counters
        self.log = log
        self.usage = usage
        self.resolution = resolution
        self.meters = meters
        self.late_window = late_window
        self.levels = LevelRecounter(counters, log, usage, retention=retention)

    # -- the two corrections ----------------------------------------------------

    def void(
        self, org: str, source: str, event_id: str, *, reason: str, actor: str, now: datetime
    ) -> Correction:
        """Take back every unit the event's items count now, from the periods they
        count on (a MAX, LATEST or UNIQUE_COUNT item's periods recounted without it).
        404: never accepted; 409: already void."""
        pause = _Pause(self.counters)
        try:
            for _ in range(MAX_ROUNDS):
                seq = self.counters.flush_seq()
                items = self._read(org, source, event_id)
                live = [i for i in items if not i.voided]
                if not live:
                    raise ConflictError(f"event {source!r} {event_id!r} is already void")
                _check_room(live, MAX_CORRECTIONS)
                if pause.needed(self._levels_of(org, live)):
                    continue  # read again under the pause
                flushed = self._flushed([i for i in live if self._meter(org, i) is None])
                try:
                    calls = [
                        self._void_call(org, source, item, flushed, reason, actor, now)
                        for item in live
                    ]
                except ResolutionMissing:
                    self.resolution.fill({(org, live[0].customer, i.feature) for i in live}, now)
                    continue
                if self._applied(org, live, calls, now, seq):
                    return self._made(
                        org, source, event_id, live, CorrectionKind.VOID, reason, actor, now
                    )
        finally:
            pause.lift()
        raise CorrectionRetryError("flushes or racing corrections kept moving this event; retry")

    def _void_call(
        self,
        org: str,
        source: str,
        item: _Item,
        flushed: Mapping[str, int],
        reason: str,
        actor: str,
        now: datetime,
    ) -> CorrectionCall:
        audit = Audit(CorrectionKind.VOID, item.made + 1, reason, actor, now)
        key = event_key(org, source, correction_id(item.id, audit.number))
        record = "0:\t" + self._record(item, now, audit.as_data())
        meter = self._meter(org, item)
        if meter is None:
            return CorrectionCall(key, record, self._take_back(item, flushed), item.feature)
        old = item.level(org, source, meter)
        target = LevelTarget(org, item.customer, source, item.id, meter, old, None, actor)
        return CorrectionCall(key, record, (), item.feature, plan=self.levels.plan(target, now))

    def amend(
        self,
        org: str,
        source: str,
        event_id: str,
        data: Mapping[str, Any],
        *,
        reason: str,
        actor: str,
        now: datetime,
    ) -> Correction:
        """Count the event as if it had been sent with ``data`` at its original time:
        its units taken back and the new ones counted through the burn-down (a MAX,
        LATEST or UNIQUE_COUNT item's periods recounted with its new form), in one
        step. 404: never accepted; 409: void. A retry with the same data and reason
        answers the amend already made."""
        pause = _Pause(self.counters)
        try:
            for _ in range(MAX_ROUNDS):
                seq = self.counters.flush_seq()
                items = self._read(org, source, event_id)
                if len(items) != 1 or items[0].id != event_id:
                    raise InvalidError(
                        "amend corrects a usage event (meterd.usage); this is a raw event fed"
                        " to meters: void it and send the corrected event under a new id"
                    )
                item = items[0]
                if item.voided:
                    raise ConflictError(
                        f"event {source!r} {event_id!r} is void: it cannot be amended"
                    )
                if (
                    item.last_audit is not None
                    and item.last_audit.get("kind") == "amend"
                    and item.last_audit.get("reason") == reason
                    and item.data == dict(data)
                    and item.last is not None
                ):
                    return self._answer(source, event_id, [(item, item.last)])
                _check_room([item], MAX_CORRECTIONS - 1)  # the last number is kept for a void
                new = self._amended(org, source, event_id, item, data, now)
                if pause.needed(self._levels_of(org, [item])):
                    continue
                try:
                    call = self._amend_call(org, source, item, new, data, reason, actor, now)
                except ResolutionMissing:
                    self.resolution.fill({(org, item.customer, item.feature)}, now)
                    continue
                if self._applied(org, [item], [call], now, seq):
                    return self._made(
                        org, source, event_id, [item], CorrectionKind.AMEND, reason, actor, now
                    )
        finally:
            pause.lift()
        raise CorrectionRetryError("flushes or racing corrections kept moving this event; retry")

    def _amend_call(
        self,
        org: str,
        source: str,
        item: _Item,
        new: UsageEvent,
        data: Mapping[str, Any],
        reason: str,
        actor: str,
        now: datetime,
    ) -> CorrectionCall:
        audit = Audit(CorrectionKind.AMEND, item.made + 1, reason, actor, now, data)
        target = new.entitlement_id.hex if new.entitlement_id else ""
        key = event_key(org, source, correction_id(item.id, audit.number))
        record = f"{new.units}:{target}\t" + self._record(item, now, audit.as_data())
        meter = self._meter(org, item)
        if meter is not None:
            level = LevelTarget(
                org,
                item.customer,
                source,
                item.id,
                meter,
                item.level(org, source, meter),
                LevelItem(
                    key=event_key(org, source, item.id),
                    time=item.time,
                    received_at=item.received_at,
                    units=new.units,
                    data=new.data,
                    target=new.entitlement_id,
                    value=new.unique_value,
                ),
                actor,
            )
            return CorrectionCall(key, record, (), item.feature, plan=self.levels.plan(level, now))
        return CorrectionCall(
            key=key,
            record=record,
            take_back=self._take_back(item, self._flushed([item])),
            feature=item.feature,
            amend=(
                item.time,
                month_start(item.time),
                new.units,
                target,
                record_json(item.customer, item.feature, item.time, now, new.data, item.scale),
            ),
        )

    def _meter(self, org: str, item: _Item) -> Meter | None:
        """The item's meter if it is a MAX, LATEST or UNIQUE_COUNT one (recounted);
        None for a sum (corrected by difference)."""
        meter = self.meters.meter(org, item.feature)
        if meter is None:
            raise ConflictError(f"feature {item.feature!r} no longer exists")
        return None if meter.aggregation in SUBTRACTABLE else meter

    def _levels_of(self, org: str, items: Sequence[_Item]) -> bool:
        return any(self._meter(org, i) is not None for i in items)

    # -- reading the event ------------------------------------------------------

    def _read(self, org: str, source: str, event_id: str) -> list[_Item]:
        """The event's accepted items with what they count now (waiting records read
        before the log: a record the flush moves in between moves the flush
        sequence, and the script then refuses). 404 if none was accepted."""
        meters = self.meters.of(org)
        items_fed = (m.feature for m in meters.by_feature.values() if m.event_type)
        candidates = [event_id, *sorted(item_id(event_id, f) for f in items_fed)]
        waiting = self.counters.waiting(org, source, candidates)
        logged = self.log.rows(org, source, [c for c in candidates if c not in waiting])
        items: list[_Item] = []
        for candidate in candidates:
            record = waiting.get(candidate) or self._from_rows(org, source, logged.get(candidate))
            if record is not None:
                item = _Item(
                    candidate,
                    record.feature,
                    record.customer,
                    record.time,
                    record.scale,
                    record.target,
                    record.data,
                    record.units,
                    record.received_at,
                )
                item.add(record)
                items.append(item)
        if not items:
            raise NotFoundError("accepted event", f"{source!r} {event_id!r}")
        ids = [correction_id(i.id, n) for i in items for n in range(1, MAX_CORRECTIONS + 1)]
        waiting = self.counters.waiting(org, source, ids)
        logged = self.log.rows(org, source, [c for c in ids if c not in waiting])
        for item in items:
            for n in range(1, MAX_CORRECTIONS + 1):
                cid = correction_id(item.id, n)
                record = waiting.get(cid) or self._from_rows(org, source, logged.get(cid))
                if record is None:
                    break
                item.add(record)
                item.made, item.last = n, record
                item.last_audit = audit_of(record.data)
                if item.last_audit is not None and item.last_audit.get("kind") == "amend":
                    item.data = record.data.get("data") or {}
                    item.target = record.target
                    item.units = record.units
        return items

    def _from_rows(
        self, org: str, source: str, rows: Sequence[EventLogRow] | None
    ) -> EventRecord | None:
        if not rows:
            return None
        return record_from_rows(org, source, rows, self._scale(org, rows[0].feature))

    def _scale(self, org: str, feature: str) -> int:
        meter = self.meters.meter(org, feature)
        if meter is None:
            raise ConflictError(f"feature {feature!r} no longer exists")
        return meter.scale

    def _amended(
        self,
        org: str,
        source: str,
        event_id: str,
        item: _Item,
        data: Mapping[str, Any],
        now: datetime,
    ) -> UsageEvent:
        """The event as if sent with ``data``, validated like any event, and its item."""
        if item.time < now - self.late_window:
            raise InvalidError(
                f"the event's time {isoformat(item.time)} is older than the late window:"
                " its period takes no usage any more; void it instead"
            )
        parsed = parse_event(
            {
                "specversion": "1.0",
                "id": event_id,
                "source": source,
                "type": USAGE_EVENT_TYPE,
                "subject": item.customer,
                "org": org,
                "time": isoformat(item.time),
                "data": dict(data),
            },
            received_at=now,
            org=org,
        )
        if isinstance(parsed, InvalidEvent):
            raise InvalidError(f"the amended event is invalid: {parsed.reason}")
        assert isinstance(parsed, UsageEvent)  # the type above is meterd.usage
        if parsed.feature != item.feature:
            raise InvalidError(
                f"an amend keeps the event's feature ({item.feature!r}); void it and send"
                " a new event for another feature"
            )
        (result,) = items_of(parsed, self.meters.of(org))
        if isinstance(result, tuple):
            raise InvalidError(f"the amended event cannot be counted: {result[1]}")
        return result

    def _flushed(self, items: Sequence[_Item]) -> dict[str, int]:
        """Flushed units of every field the items count on (to seed a running total
        the script finds missing: a period older than any cached resolution data)."""
        keys = []
        scales = {}
        for item in items:
            for name in item.counts:
                key = parse_period_field(name)
                keys.append(key)
                scales[key] = (name, item.scale)
        values, _ = self.usage.flushed_consumption(keys, None)
        return {
            scales[key][0]: to_units(Decimal(value), scales[key][1])
            for key, value in values.items()
            if key in scales
        }

    @staticmethod
    def _take_back(item: _Item, flushed: Mapping[str, int]) -> list[tuple[str, int, int]]:
        return [(name, units, flushed.get(name, 0)) for name, units in item.counts.items()]

    @staticmethod
    def _record(item: _Item, now: datetime, data: Mapping[str, Any]) -> str:
        return record_json(item.customer, item.feature, item.time, now, data, item.scale)

    # -- writing ----------------------------------------------------------------

    def _applied(
        self,
        org: str,
        items: Sequence[_Item],
        calls: Sequence[CorrectionCall],
        now: datetime,
        seq: int,
    ) -> bool:
        """True once written; False to read again; raises what cannot be retried."""
        customer = items[0].customer
        code = self.counters.apply(org, customer, calls, now=now, seq=seq)
        if code == "a":
            return True
        if code == "m":
            self.resolution.fill({(org, customer, i.feature) for i in items}, now)
            return False
        if code in ("r", "d"):
            return False
        reasons = {
            "n": "no entitlement takes the amended event at its time",
            "s": "the customer's entitlement was suspended at the event's time",
            "o": "the amended value would carry a counter past what it holds exactly",
        }
        raise InvalidError(reasons.get(code, f"the correction was refused ({code})"))

    def _made(
        self,
        org: str,
        source: str,
        event_id: str,
        items: Sequence[_Item],
        kind: CorrectionKind,
        reason: str,
        actor: str,
        now: datetime,
    ) -> Correction:
        """The correction just written, read back (the amend's burn-down is the
        script's)."""
        made: list[tuple[_Item, EventRecord]] = []
        for item in items:
            cid = correction_id(item.id, item.made + 1)
            record = self.counters.waiting(org, source, [cid]).get(cid)
            if record is None:
                record = self._from_rows(org, source, self.log.rows(org, source, [cid]).get(cid))
            if record is None:  # pragma: no cover - flushed and dropped in between
                continue
            made.append((item, record))
        if not made:  # pragma: no cover
            return Correction(kind, source, event_id, reason, actor, now, (), ())
        return self._answer(source, event_id, made)

    @staticmethod
    def _answer(
        source: str, event_id: str, made: Sequence[tuple[_Item, EventRecord]]
    ) -> Correction:
        audit = audit_of(made[0][1].data) or {}
        parts = tuple(
            CorrectionPart(
                item.feature,
                part.entitlement_id,
                part.period_start,
                from_units(part.units, record.scale),
            )
            for item, record in made
            for part in record.allocations
        )
        return Correction(
            kind=CorrectionKind(audit.get("kind", "void")),
            source=source,
            id=event_id,
            reason=str(audit.get("reason", "")),
            actor=str(audit.get("actor", "")),
            at=made[0][1].received_at,
            numbers=tuple(int((audit_of(r.data) or {}).get("number", 0)) for _, r in made),
            parts=parts,
            data=made[0][1].data.get("data"),
        )


class _Pause:
    """The flush pause a level recount reads under (set once, lifted at the end)."""

    def __init__(self, counters: CorrectionCounters) -> None:
        self.counters = counters
        self.token: str | None = None

    def needed(self, levels: bool) -> bool:
        """True when the pause was just set (read again under it)."""
        if not levels or self.token is not None:
            return False
        self.token = uuid.uuid4().hex
        self.counters.pause_flush(self.token, PAUSE_SECONDS)
        return True

    def lift(self) -> None:
        """Lift the pause; if Redis does not answer, it lapses by itself (the error
        that ended the correction is the one to report)."""
        if self.token is not None:
            with contextlib.suppress(CounterStoreError):
                self.counters.resume_flush(self.token)


def _check_room(items: Sequence[_Item], numbers: int) -> None:
    """Refuse a correction past the numbers ``_read`` looks up (a correction it could
    not see would be taken back twice)."""
    for item in items:
        if item.made >= numbers:
            raise ConflictError(
                f"event item {item.id!r} has had {item.made} corrections, the most it may"
                f" take ({MAX_CORRECTIONS}, the last kept for a void)"
            )
