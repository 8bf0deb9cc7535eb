"""The corrections' stores: ``correct.lua`` over the counters, and the log's rows of
an event and of its corrections.

``CorrectionCounters`` takes the same Redis client and ``RedisKeys`` as the
``CounterStore`` and runs the one script that writes a correction (a
compensating entry: the used totals, the pending hash and the correction's
record, in one atomic call). ``CorrectionLog`` reads what the flush logged of an
event's items and their corrections, every part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.event_records import EventRecord, event_key, parse_pending_record
from meterd.core.redis_keys import RedisKeys
from meterd.core.timeutil import epoch_micros
from meterd.lua import script_source
from meterd.storage.counters import CounterStoreError
from meterd.storage.models import EventLogRow


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


class CorrectionCounters:
    """Writes corrections to the Redis counters (``correct.lua``)."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, *, late_window: timedelta) -> None:
        self.client = client
        self.keys = keys
        self._late_window_us = int(late_window.total_seconds() * 1_000_000)
        self._correct = client.register_script(script_source("correct.lua"))

    def flush_seq(self) -> int:
        """Read before the records an event's corrections are computed from."""
        return int(self.client.get(self.keys.flush_seq) or 0)

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
            if call.amend is None:
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
