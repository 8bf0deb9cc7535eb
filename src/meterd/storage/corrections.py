"""The corrections' stores: ``correct.lua`` over the counters, and the log's rows of
an event and of its corrections.

``CorrectionCounters`` takes the same Redis client and ``RedisKeys`` as the
``CounterStore`` and runs the one script that writes a correction (a
compensating entry: the used totals, the pending hash and the correction's
record, in one atomic call). ``CorrectionLog`` reads what the flush logged of an
event's items and their corrections, every part.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, cast

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.corrections import CORRECTION_SEPARATOR
from meterd.core.event_records import Allocation, EventRecord, event_key, parse_pending_record
from meterd.core.quantity import to_units
from meterd.core.redis_keys import LEVEL_VERSION_PATTERN, LEVEL_VERSION_PREFIX, RedisKeys
from meterd.core.timeutil import epoch_micros
from meterd.lua import script_source
from meterd.storage.counters import CounterStoreError
from meterd.storage.models import BackfillLogRow, EventLogRow


@dataclass(frozen=True, slots=True)
class CorrectionCall:
    """One item's correction as ``correct.lua`` takes it (see its header)."""

    #: The pending events field of the correction (``event_key`` of its logged id).
    key: str
    #: "<quantity>:<target>\\t<record JSON>" (the audit in the record's data).
    record: str
    #: What the item counts now: (period field, units, flushed units in SQL).
    take_back: Sequence[tuple[str, int, int]]
    feature: str
    #: An amend: (time, month start, units, target hex or "", record JSON with the
    #: new data); None for a void.
    amend: tuple[datetime, datetime, int, str, str] | None = None
    #: A MAX, LATEST or UNIQUE_COUNT item: the recount's plan (``correct.lua``,
    #: "plan"); ``take_back`` and ``amend`` are then empty.
    plan: Mapping[str, Any] | None = None


class LoggedItem(NamedTuple):
    """What a recount needs of one logged event item (its first part)."""

    source: str
    event_id: str
    event_time: datetime
    event_quantity: Decimal
    target_id: uuid.UUID | None
    received_at: datetime
    data: Any


class CorrectionCounters:
    """Writes corrections to the Redis counters (``correct.lua``)."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, *, late_window: timedelta) -> None:
        self.client = client
        self.keys = keys
        self._late_window_us = int(late_window.total_seconds() * 1_000_000)
        self._correct = client.register_script(script_source("correct.lua"))
        self._resume = client.register_script(script_source("flush_resume.lua"))

    def flush_seq(self) -> int:
        """Read before the records an event's corrections are computed from."""
        return int(self.client.get(self.keys.flush_seq) or 0)

    def pause_flush(self, token: str, seconds: float) -> None:
        """Hold new flush batches back (a level recount reads the log, then the waiting
        events: no event may move between them); lapses by itself."""
        self._call(lambda: self.client.set(self.keys.flush_pause, token, px=int(seconds * 1000)))

    def resume_flush(self, token: str) -> None:
        """Lift this caller's pause (another caller's, set since, stays)."""
        self._call(lambda: self._resume(keys=[self.keys.flush_pause], args=[token]))

    def flush_in_flight(self) -> bool:
        return bool(self._call(lambda: self.client.exists(self.keys.flush_inflight)))

    def versions(self, org: str, customer: str) -> dict[str, int]:
        """Every level period's version of the customer (``v:<field>`` of the used
        hash, bumped for every item counted on a MAX, LATEST or UNIQUE_COUNT period)."""
        used = self.keys.used(org, customer)
        found: dict[str, int] = {}
        try:
            for name, value in self.client.hscan_iter(
                used, match=LEVEL_VERSION_PATTERN, count=1000
            ):
                found[name.decode().removeprefix(LEVEL_VERSION_PREFIX)] = int(value)
        except redis.RedisError as exc:
            raise CounterStoreError(f"reading level versions failed: {exc}") from exc
        return found

    def resolution_payload(self, org: str, customer: str, feature: str) -> str | None:
        """The resolution data the script judges the feature's events with (None:
        not cached)."""
        raw = self._call(lambda: self.client.get(self.keys.resolution(org, customer, feature)))
        return raw.decode() if isinstance(raw, bytes) else None

    def waiting_count(self) -> int:
        pipe = self.client.pipeline(transaction=True)
        pipe.hlen(self.keys.pending_events)
        pipe.hlen(self.keys.flush_events)
        return sum(cast(list[int], self._call(pipe.execute)))

    def waiting_of(self, org: str, customer: str, feature: str) -> Iterator[EventRecord]:
        """Every waiting record (events and corrections) of one customer's feature:
        both waiting hashes scanned (``HSCAN``), the record's text matched before it
        is parsed. The caller bounds the hashes' size first (``waiting_count``)."""
        head = f'\t{{"c":{json.dumps(customer)},"f":{json.dumps(feature)},'.encode()
        prefix = f"{org}:".encode()
        for name in (self.keys.pending_events, self.keys.flush_events):
            try:
                for key, raw in self.client.hscan_iter(name, count=1000):
                    if head in raw and key.startswith(prefix):
                        yield parse_pending_record(key.decode(), raw.decode())
            except redis.RedisError as exc:
                raise CounterStoreError(f"reading waiting events failed: {exc}") from exc

    def _call(self, op: Any) -> Any:
        try:
            return op()
        except redis.RedisError as exc:
            raise CounterStoreError(f"a correction's read or write failed: {exc}") from exc

    def waiting(self, org: str, source: str, ids: Sequence[str]) -> dict[str, EventRecord]:
        """The records among ``ids`` (logged ids) that wait for a flush, pending or in
        flight, by id."""
        if not ids:
            return {}
        fields = [event_key(org, source, i) for i in ids]
        pipe = self.client.pipeline(transaction=True)  # both hashes at one instant
        pipe.hmget(self.keys.pending_events, fields)
        pipe.hmget(self.keys.flush_events, fields)
        try:
            pending, inflight = cast(list[list[bytes | None]], pipe.execute())
        except redis.RedisError as exc:
            raise CounterStoreError(f"reading waiting events failed: {exc}") from exc
        found: dict[str, EventRecord] = {}
        for logged_id, field, a, b in zip(ids, fields, pending, inflight, strict=True):
            raw = a if a is not None else b
            if raw is not None:
                found[logged_id] = parse_pending_record(field, raw.decode())
        return found

    def apply(
        self, org: str, customer: str, calls: Sequence[CorrectionCall], *, now: datetime, seq: int
    ) -> str:
        """Write the corrections in one call; the script's one-character answer."""
        k = self.keys
        keys: list[str] = [
            k.pending,
            k.pending_since,
            k.pending_events,
            k.flush_events,
            k.flush_seq,
            k.big_counters,
            k.used(org, customer),
            k.holds_due,
        ]
        args: list[str | int] = [epoch_micros(now), seq, self._late_window_us]
        for call in calls:
            keys.append(k.resolution(org, customer, call.feature))
            take_back = ",".join(f"{f}={u}={s}" for f, u, s in call.take_back)
            if call.plan is not None:
                plan = json.dumps(call.plan, separators=(",", ":"))
                args += [call.key, call.record, "", "P", plan, "", "", "", ""]
            elif call.amend is None:
                args += [call.key, call.record, take_back, "V", "", "", "", "", ""]
            else:
                time, month, units, target, record = call.amend
                args += [
                    call.key,
                    call.record,
                    take_back,
                    "A",
                    epoch_micros(time),
                    epoch_micros(month),
                    units,
                    target,
                    record,
                ]
        try:
            result = self._correct(keys=keys, args=args)
        except redis.RedisError as exc:
            raise CounterStoreError(f"writing a correction failed: {exc}") from exc
        return result.decode() if isinstance(result, bytes) else str(result)


def record_from_rows(org: str, source: str, rows: Sequence[EventLogRow], scale: int) -> EventRecord:
    """The record of one logged id from its parts (in part order)."""
    first = rows[0]
    return EventRecord(
        org=org,
        source=source,
        id=first.event_id,
        customer=first.customer_id,
        feature=first.feature,
        time=first.event_time,
        units=to_units(Decimal(first.event_quantity), scale),
        scale=scale,
        target=first.target_id,
        received_at=first.received_at,
        data=first.data or {},
        allocations=tuple(
            Allocation(r.entitlement_id, r.period_start, to_units(Decimal(r.quantity), scale))
            for r in rows
        ),
    )


class CorrectionLog:
    """What the event log holds of some logged ids (every part)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def rows(self, org: str, source: str, ids: Sequence[str]) -> Mapping[str, list[EventLogRow]]:
        """The logged parts of ``ids`` (in part order), by id; absent ids are not keys."""
        found: dict[str, list[EventLogRow]] = {}
        if not ids:
            return found
        ordered = sorted(set(ids))
        with self.sessions() as s:
            for start in range(0, len(ordered), 500):
                stmt = (
                    select(EventLogRow)
                    .where(
                        EventLogRow.org_id == org,
                        EventLogRow.source == source,
                        EventLogRow.event_id.in_(ordered[start : start + 500]),
                    )
                    .order_by(EventLogRow.event_id, EventLogRow.part)
                )
                for row in s.scalars(stmt):
                    found.setdefault(row.event_id, []).append(row)
                s.expunge_all()
        return found

    def records(
        self, org: str, source: str, ids: Sequence[str], scale: int
    ) -> dict[str, EventRecord]:
        """The logged records among ``ids``, by id."""
        return {
            logged_id: record_from_rows(org, source, rows, scale)
            for logged_id, rows in self.rows(org, source, ids).items()
        }

    def backfilled_in(
        self, org: str, customer: str, feature: str, start: datetime, end: datetime | None
    ) -> bool:
        """Whether the backfill counted history of the feature in ``[start, end)``
        straight into SQL (closed periods): it is in ``event_log_backfill`` only."""
        stmt = select(BackfillLogRow.event_id).where(
            BackfillLogRow.org_id == org,
            BackfillLogRow.customer_id == customer,
            BackfillLogRow.event_time >= start,
            BackfillLogRow.feature == feature,
            BackfillLogRow.counted_live.is_(False),
        )
        if end is not None:
            stmt = stmt.where(BackfillLogRow.event_time < end)
        with self.sessions() as s:
            return s.execute(stmt.limit(1)).first() is not None

    def items_of(
        self,
        org: str,
        customer: str,
        feature: str,
        start: datetime,
        end: datetime | None,
        *,
        corrections_only: bool = False,
    ) -> Iterator[LoggedItem]:
        """The first part of every logged item and correction of a customer's feature
        timed in ``[start, end)`` (streamed; the caller bounds how many it reads); or
        of the corrections only."""
        cols = (
            EventLogRow.source,
            EventLogRow.event_id,
            EventLogRow.event_time,
            EventLogRow.event_quantity,
            EventLogRow.target_id,
            EventLogRow.received_at,
            EventLogRow.data,
        )
        stmt = select(*cols).where(
            EventLogRow.org_id == org,
            EventLogRow.customer_id == customer,
            EventLogRow.event_time >= start,
            EventLogRow.feature == feature,
            EventLogRow.part == 0,
        )
        if end is not None:
            stmt = stmt.where(EventLogRow.event_time < end)
        if corrections_only:
            stmt = stmt.where(EventLogRow.event_id.contains(CORRECTION_SEPARATOR, autoescape=True))
        with self.sessions() as s:
            for row in s.execute(stmt.execution_options(yield_per=2000)):
                yield LoggedItem(*row)
