"""The Redis counter store: dedupe, burn-down and exact counters in Lua.

Every write path is one Lua script call, so a batch is counted entirely or not
at all, and the dedupe markers are written in the same atomic step as the
counts they guard. Python never formats values into a script: the scripts live
in ``meterd/lua/*.lua``, read through ``meterd.lua`` and registered once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

import redis

from meterd.core.domain import Aggregation
from meterd.core.errors import UnavailableError
from meterd.core.event_records import (
    MARKER_BITS,
    EventRecord,
    event_key,
    marker_digest,
    parse_pending_record,
    record_json,
)
from meterd.core.events import UsageEvent
from meterd.core.notifications import CROSSING_FIELD_PREFIX, Crossing
from meterd.core.redis_keys import RedisKeys, period_field
from meterd.core.timeutil import epoch_micros, month_start
from meterd.lua import script_source
from meterd.storage.resolution_cache import Candidate, FastEntry, ResolutionCache, candidate


class ScriptCode(StrEnum):
    """The code ``ingest.lua`` returns for each event: one character, named once here
    (the script's header lists the same codes; a test holds the two together)."""

    ACCEPTED = "a"
    DUPLICATE = "d"
    LATE = "l"
    SUSPENDED = "s"
    NO_ENTITLEMENT = "n"
    #: The customer's resolution data is not cached: nothing was written for the
    #: event; load the data and count it again.
    MISSING_RESOLUTION = "m"
    #: Strict (a reservation) only: the room left does not cover it; nothing counted.
    NO_ROOM = "x"
    #: Strict only: the idempotency key was granted for other parameters.
    CONFLICT = "c"
    #: The event may have been accepted before (its marker may be gone, or it hit a
    #: marker of an event already flushed): search the event log, then make a
    #: confirmed call. Nothing was written.
    CONFIRM = "k"
    #: Confirmed call only: a flush began or ended since the caller read the flush
    #: sequence; search again.
    RETRY = "r"
    #: Too many events wait for a flush (the database is down or slow); nothing
    #: was written. Retry later.
    BACKPRESSURE = "b"
    #: Counting it would carry a counter past what it holds exactly (``MAX_UNITS``
    #: of the feature's scale); nothing was written. The event is invalid.
    OUT_OF_RANGE = "o"
    #: Settle only: the hold reached its expiry unsettled (its units are free).
    HOLD_EXPIRED = "e"
    #: Settle only: the hold was released.
    HOLD_RELEASED = "f"
    #: Settle only: no such hold (never made, or its record is gone).
    HOLD_MISSING = "g"
    #: Hold only: the customer keeps the most live holds it may; nothing was held.
    TOO_MANY_HOLDS = "t"


_BY_CHARACTER = {code.value: code for code in ScriptCode}
#: A running total above this many units is listed in ``RedisKeys.big_counters``
#: (ingest.lua's BIG: its bound check reads only those).
BIG_COUNTER = 2**52
#: How ingest.lua names each aggregation (COUNT is a sum of ones).
_AGGREGATION_CODES = {
    Aggregation.SUM: "S",
    Aggregation.COUNT: "S",
    Aggregation.UNIQUE_COUNT: "U",
    Aggregation.MAX: "M",
    Aggregation.LATEST: "L",
}


_DAY_US = 86_400_000_000

#: What joins an event's fields into its one ingest.lua argument (ASCII GS). No field
#: can hold it: ids, sources and customers are printable (``PRINTABLE_PATTERN``, no
#: C0 control character), except that a meter item's id carries ``ITEM_SEPARATOR``
#: (US, \x1f: not this one); the record, a unique value and a hold's meta are JSON,
#: which escapes every control character; the rest are digits, hex and key names.
#: Tab, which the record's prefix and a hold operation contain, is not it either.
#: ``add_batch`` still counts them and refuses an event whose fields hold one.
EVENT_FIELD_SEPARATOR = "\x1d"
#: What joins the entries and the candidates the worker gives (ASCII RS): resolution
#: JSON escapes every control character, and ``resolution_cache.fast_entry`` gives
#: no candidate whose field holds this or ``EVENT_FIELD_SEPARATOR``.
GIVEN_SEPARATOR = "\x1e"
#: How many separators an event's argument holds (its fields less one).
_SEPARATORS = 11
#: The aggregations whose events may be given their candidate (a COUNT is a SUM).
_GIVEN_AGGREGATIONS = frozenset({Aggregation.SUM, Aggregation.COUNT})


class CounterStoreError(UnavailableError):
    """Redis could not be reached or refused a command."""


def _micros(span: timedelta) -> int:
    return int(span.total_seconds() * 1_000_000)


@dataclass(frozen=True, slots=True)
class FlushBatchContent:
    """A flush batch: micro-units per period field, the threshold crossings
    recorded with them, and the records of the events counted (see ingest.lua)."""

    deltas: dict[str, int]
    crossings: list[Crossing]
    events: list[EventRecord] = dataclasses.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MarkerFigures:
    """What the dedupe markers hold now (for status and metrics)."""

    generations: int
    markers: int
    sets: int
    #: Redis's own MEMORY USAGE of a sample of the sets, scaled to all; None when
    #: the server does not answer MEMORY USAGE.
    bytes: int | None


@dataclass(frozen=True, slots=True)
class PendingSnapshot:
    """What Redis holds for some periods, read atomically (see pending_snapshot.lua)."""

    epoch: int
    inflight_batch: str | None
    pending: dict[str, int]
    inflight: dict[str, int]


class CounterStore:
    """Counts usage in Redis. One instance per process; thread-safe like redis-py."""

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        *,
        hot_window: timedelta,
        late_window: timedelta,
        future_skew: timedelta = timedelta(minutes=5),
        max_waiting_events: int = 5_000_000,
        marker_generations: int = 4,
        marker_bits: int = MARKER_BITS,
        resolution_cache: bool = True,
    ) -> None:
        """``hot_window``: how long a marker is kept after its event's acceptance;
        older events are checked against the event log. A marker generation is
        ``hot_window / marker_generations`` long: more generations keep less past
        the hot window but cost a lookup each. ``max_waiting_events``: how many
        accepted events may wait for a flush before ingest refuses more (the
        records stay in Redis until the database has them). ``resolution_cache``:
        keep a copy of the resolution entries and give ingest.lua the candidate
        period of the common event (``storage/resolution_cache.py``; off: the script
        decides every event itself, as a check and for measuring)."""
        if hot_window <= future_skew:
            raise ValueError("the hot window must be longer than the future skew")
        self.client = client
        self.keys = keys
        self.hot_window = hot_window
        self.late_window = late_window
        self.max_waiting_events = max_waiting_events
        self.marker_bits = marker_bits
        self._late_window_us = _micros(late_window)
        self._hot_us = _micros(hot_window)
        self._skew_us = _micros(future_skew)
        self._generation_us = max(self._hot_us // marker_generations, 1)
        self.resolution_cache = ResolutionCache() if resolution_cache else None
        self._ingest = client.register_script(script_source("ingest.lua"))
        self._flush_begin = client.register_script(script_source("flush_begin.lua"))
        self._flush_end = client.register_script(script_source("flush_end.lua"))
        self._snapshot = client.register_script(script_source("pending_snapshot.lua"))

    # -- ingest ---------------------------------------------------------------

    def add_batch(
        self,
        events: Sequence[UsageEvent],
        *,
        now: datetime,
        strict: bool = False,
        confirmed_seq: int | None = None,
    ) -> list[ScriptCode]:
        """Count a batch in one script call; returns the code of each event.

        ``MISSING_RESOLUTION`` means the customer's resolution data was not cached:
        nothing was written for that event and the caller should load it and retry.
        ``CONFIRM`` means the event log must be searched first: the caller then
        calls again with ``confirmed_seq`` (the flush sequence read before the
        search) for the events it did not find. ``services.counting.UsageCounter``
        does both. ``strict`` (a reservation): an event that does not fit in the
        room its PRE_PAID entitlements have left is refused whole (``NO_ROOM``)
        instead of being counted as overage.
        """
        if not events:
            return []
        k = self.keys
        keys: list[str] = [
            k.pending,
            k.pending_since,
            k.stats("events"),
            k.pending_events,
            k.flush_events,
            k.flush_seq,
            k.marker_generations,
            k.big_counters,
            k.holds_due,
        ]
        args: list[str | int] = [
            epoch_micros(now),
            self._late_window_us,
            self._hot_us,
            1 if strict else 0,
            "" if confirmed_seq is None else confirmed_seq,
            self._generation_us,
            k.marker_prefix,
            self._skew_us,
            self.max_waiting_events,
        ]
        months: dict[tuple[int, int], int] = {}
        # each key once, in KEYS (Redis Cluster needs every key declared): the
        # event's ARGV names the positions of its two
        res_at: dict[tuple[str, str, str], str] = {}
        used_at: dict[tuple[str, str], str] = {}
        resolution_key, used_key = k.resolution, k.used
        # the common events' candidates (storage/resolution_cache.py): the raw entries
        # they were computed from (once a key), and each distinct candidate once
        fast = self._fast_entries(events)
        raws: list[str] = []
        raw_at: dict[str, int] = {}
        given: list[str] = []
        given_at: dict[tuple[str, Candidate], str] = {}
        packed_events: list[str] = []
        sep = EVENT_FIELD_SEPARATOR
        for event in events:
            org, customer, feature = event.org, event.customer, event.feature
            res = res_at.get((org, customer, feature))
            if res is None:
                keys.append(resolution_key(org, customer, feature))
                res = res_at[(org, customer, feature)] = str(len(keys))
            used = used_at.get((org, customer))
            if used is None:
                keys.append(used_key(org, customer))
                used = used_at[(org, customer)] = str(len(keys))
            when = event.time
            month = months.get((when.year, when.month))
            if month is None:
                month = months[(when.year, when.month)] = epoch_micros(month_start(when))
            key = event_key(org, event.source, event.id)
            units = str(event.units)
            target = event.entitlement_id.hex if event.entitlement_id else ""
            record = record_json(customer, feature, when, now, event.data, event.scale)
            ts = epoch_micros(when)
            hold = self._hold_op(event)
            given_index = ""
            entry = fast.get(keys[int(res) - 1]) if fast else None
            if entry is not None and hold == "" and event.aggregation in _GIVEN_AGGREGATIONS:
                cand = candidate(entry[1], ts, month, target)
                if cand is not None:
                    # each candidate once a call, with the index of its entry's text
                    given_index = given_at.get((res, cand), "")
                    if not given_index:
                        raw = entry[0]
                        at = raw_at.get(raw)
                        if at is None:
                            raws.append(raw)
                            at = raw_at[raw] = len(raws)
                        field, limit, prepaid = cand
                        given.append(f"{at}{sep}{field}{sep}{limit}{sep}{1 if prepaid else 0}")
                        given_index = given_at[(res, cand)] = str(len(given))
            packed = sep.join(
                (
                    res,
                    used,
                    str(ts),
                    str(month),
                    units,
                    target,
                    key,
                    str(marker_digest(key, self.marker_bits)),
                    _AGGREGATION_CODES[event.aggregation] + (event.unique_value or ""),
                    hold,
                    given_index,
                    # the start of its pending record: the script appends the allocation
                    f"{units}:{target}\t{record}\t",
                )
            )
            if packed.count(sep) != _SEPARATORS:
                raise ValueError(f"an ingest field of event {key!r} holds the field separator")
            packed_events.append(packed)
        # two arguments, however many entries and candidates (redis-py packs each
        # argument in Python: about 0.5 us an argument)
        args += [GIVEN_SEPARATOR.join(raws), GIVEN_SEPARATOR.join(given), *packed_events]
        try:
            result = self._ingest(keys=keys, args=args)
        except redis.RedisError as exc:
            raise CounterStoreError(f"counting a batch failed: {exc}") from exc
        text = result.decode() if isinstance(result, bytes) else str(result)
        if self.resolution_cache is not None and ScriptCode.MISSING_RESOLUTION.value in text:
            self.resolution_cache.forget(
                keys[int(p.split(sep, 1)[0]) - 1]
                for p, c in zip(packed_events, text, strict=True)
                if c == ScriptCode.MISSING_RESOLUTION.value
            )
        return [_BY_CHARACTER[c] for c in text]

    def _fast_entries(self, events: Sequence[UsageEvent]) -> dict[str, tuple[str, FastEntry]]:
        """The cached entries of the common shape the batch's events may use: resolution
        key -> (raw text, fast data); the missing or expired fetched in one MGET."""
        cache = self.resolution_cache
        if cache is None:
            return {}
        triples = {
            (e.org, e.customer, e.feature)
            for e in events
            if e.hold is None and e.aggregation in _GIVEN_AGGREGATIONS
        }
        if not triples:
            return {}
        wanted = [self.keys.resolution(*t) for t in triples]
        try:
            return cache.lookup(wanted, self._mget)
        except redis.RedisError as exc:
            raise CounterStoreError(f"reading resolution data failed: {exc}") from exc

    def _mget(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        return cast(list[bytes | None], self.client.mget(keys))

    def _hold_op(self, event: UsageEvent) -> str:
        """ingest.lua's hold operation of an event ("" for usage and reservations)."""
        op = event.hold
        if op is None:
            return ""
        key = self.keys.hold(event.org, op.hold_id)
        if op.kind == "settle":
            return f"S{key}"
        assert op.expires_at is not None, "a hold has an expiry"
        return f"H{key}\t{epoch_micros(op.expires_at)}\t{op.max_live}\t{op.meta}"

    def flush_seq(self) -> int:
        """The flush sequence: read it before searching the event log (see add_batch)."""
        return int(self.client.get(self.keys.flush_seq) or 0)

    def store_resolutions(
        self,
        entries: Sequence[tuple[str, str, str, str, int, Mapping[str, int]]],
        *,
        replace: bool,
    ) -> None:
        """Cache resolution data, with the running totals it needs, in one round trip.

        Each entry: (org, customer, feature, payload, ttl seconds, flushed units by
        field). Totals are seeded with HSETNX: a period with pending usage always has
        a ``used`` entry (the ingest script writes both), so a live total is never
        overwritten by a stale one. ``replace=False`` only fills a missing entry:
        writers that just changed an entitlement replace; ingest workers that loaded
        it after a miss only fill, so a slow loader holding data read before a
        change can never overwrite the fresher entry.
        """
        pipe = self.client.pipeline(transaction=False)
        for org, customer, feature, payload, ttl, flushed in entries:
            used_key = self.keys.used(org, customer)
            for field, units in flushed.items():
                pipe.hsetnx(used_key, field, units)
                if units > BIG_COUNTER:
                    pipe.sadd(self.keys.big_counters, field)  # ingest.lua reads these
            pipe.set(self.keys.resolution(org, customer, feature), payload, ex=ttl, nx=not replace)
            if replace:
                self._rearm_unique_sets(pipe, org, customer, payload)
        pipe.execute()
        if self.resolution_cache is not None:  # this process's copy is stale now
            self.resolution_cache.forget(self.keys.resolution(o, c, f) for o, c, f, *_ in entries)

    def _rearm_unique_sets(self, pipe: Any, org: str, customer: str, payload: str) -> None:
        """Re-arm the expiry of the UNIQUE_COUNT sets of the stored periods (a no-op
        where a period has none) from the data just written: a change may have moved
        a period's end or the end of its grace (ingest.lua's period_of computes the
        same "kept until" when it writes a set). Only writers re-arm: a loader's data
        may be older than the entry it leaves in place."""
        for entry in json.loads(payload):
            periods = entry["p"]
            last = max((p[0] for p in periods), default=None)
            for start, end, _, field in periods:
                keep = end
                if end >= 0 and "r" not in entry and start == last:
                    keep = -1 if entry["u"] < 0 else max(end, entry["u"])
                key = self.keys.unique_values(org, customer, field)
                if keep < 0:
                    pipe.persist(key)
                else:
                    pipe.pexpireat(key, (keep + self._late_window_us + _DAY_US) // 1000)

    # -- flush ----------------------------------------------------------------

    def begin_flush(self, new_batch_id: str) -> str | None:
        """The batch to apply: a crashed flush's batch, else pending renamed to a new one."""
        k = self.keys
        result = self._flush_begin(
            keys=[
                k.pending,
                k.flush_batch,
                k.flush_inflight,
                k.flush_epoch,
                k.pending_since,
                k.flush_batch_since,
                k.pending_events,
                k.flush_events,
                k.flush_seq,
                k.flush_pause,
            ],
            args=[new_batch_id],
        )
        if not result:
            return None
        return result.decode() if isinstance(result, bytes) else str(result)

    def read_flush_batch(self) -> FlushBatchContent:
        raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys.flush_batch))
        content = FlushBatchContent({}, [])
        for raw_field, value in raw.items():
            name = raw_field.decode()
            if name.startswith(CROSSING_FIELD_PREFIX):
                content.crossings.append(Crossing.parse(name, value.decode()))
            else:
                content.deltas[name] = int(value)
        for key, record in self.client.hscan_iter(self.keys.flush_events, count=2000):
            content.events.append(parse_pending_record(key.decode(), record.decode()))
        return content

    def end_flush(self, batch_id: str, counted_twice: Sequence[EventRecord] = ()) -> bool:
        """Forget the batch the database now holds, and take the units of the events
        it found ``counted_twice`` back off the consumed counters, in one step."""
        k = self.keys
        used_keys: dict[str, int] = {}
        taken: dict[tuple[int, str], int] = {}
        for record in counted_twice:
            index = used_keys.setdefault(k.used(record.org, record.customer), len(used_keys) + 1)
            for part in record.allocations:
                name = period_field(part.entitlement_id, part.period_start)
                taken[(index, name)] = taken.get((index, name), 0) - part.units
        args: list[str | int] = [batch_id]
        for (index, name), units in taken.items():
            if units:
                args += [index, name, units]
        return bool(
            self._flush_end(
                keys=[
                    k.flush_inflight,
                    k.flush_batch,
                    k.flush_batch_since,
                    k.flush_events,
                    k.flush_seq,
                    *used_keys,
                ],
                args=args,
            )
        )

    # -- reads ----------------------------------------------------------------

    def flush_lag_since(self) -> int | None:
        """Epoch microseconds of the oldest write not yet in the database (the batch in
        flight, else the pending hash), or None when everything is flushed."""
        batch, pending = cast(
            list[bytes | None],
            self.client.mget([self.keys.flush_batch_since, self.keys.pending_since]),
        )
        oldest = batch if batch is not None else pending
        return int(oldest) if oldest is not None else None

    def resolution_entry(self, org: str, customer: str, feature: str) -> str | None:
        """The cached resolution data (JSON), or None if it is not cached."""
        raw = cast(bytes | None, self.client.get(self.keys.resolution(org, customer, feature)))
        return None if raw is None else raw.decode()

    def live_totals(self, org: str, customer: str, fields: Sequence[str]) -> dict[str, int]:
        """Consumed micro-units (flushed + pending) of some periods, from the running
        totals ingest keeps; exact while the customer's resolution data is cached
        (it is seeded with the flushed values before it becomes reachable)."""
        if not fields:
            return {}
        values = cast(list[bytes | None], self.client.hmget(self.keys.used(org, customer), fields))
        return {f: int(v) if v is not None else 0 for f, v in zip(fields, values, strict=True)}

    def pending_snapshot(self, fields: Sequence[str]) -> PendingSnapshot:
        k = self.keys
        raw: list[Any] = self._snapshot(
            keys=[k.pending, k.flush_batch, k.flush_inflight, k.flush_epoch], args=list(fields)
        )
        values = [int(v) for v in raw[2:]]
        n = len(fields)
        inflight_id = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1])
        return PendingSnapshot(
            epoch=int(raw[0]),
            inflight_batch=inflight_id or None,
            pending=dict(zip(fields, values[:n], strict=True)),
            inflight=dict(zip(fields, values[n:], strict=True)),
        )

    def flush_epoch(self) -> int:
        return int(self.client.get(self.keys.flush_epoch) or 0)

    def pending_fields(self) -> dict[str, int]:
        """Everything not yet in the database: pending plus the batch in flight."""
        total: dict[str, int] = {}
        for key in (self.keys.pending, self.keys.flush_batch):
            raw = cast(dict[bytes, bytes], self.client.hgetall(key))
            for field, value in raw.items():
                total[field.decode()] = total.get(field.decode(), 0) + int(value)
        return total

    def waiting_events(self) -> int:
        """Accepted events not yet in the event log (pending and in flight)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hlen(self.keys.pending_events)
        pipe.hlen(self.keys.flush_events)
        return sum(int(n) for n in pipe.execute())

    def marker_figures(self, sample: int = 20) -> MarkerFigures:
        """Marker generations, markers and sets now, and their memory (sampled)."""
        generations = [
            g.decode()
            for g in cast(list[bytes], self.client.zrange(self.keys.marker_generations, 0, -1))
        ]
        markers = sets = 0
        sample_keys: list[str] = []
        for g in generations:
            meta = cast(
                list[bytes | None],
                self.client.hmget(self.keys.marker_generation(g), ["L", "p", "n", "left"]),
            )
            level, split, count, left = (int(v) if v is not None else None for v in meta)
            shards = 2 ** (level or 0) + (split or 0)
            shards = left if left is not None else shards
            if left is None:  # a dead generation being deleted holds no live markers
                markers += count or 0
            sets += shards
            step = max(shards // max(sample // max(len(generations), 1), 1), 1)
            sample_keys += [self.keys.marker_shard(g, i) for i in range(0, shards, step)]
        sample_keys = sample_keys[:sample]
        size: int | None = None
        if sample_keys and sets:
            try:
                used = [self.client.memory_usage(key) for key in sample_keys]
            except redis.ResponseError:
                used = []
            present = [u for u in used if u]
            if present:
                size = int(sum(present) / len(present) * sets)
        elif not sets:
            size = 0
        return MarkerFigures(len(generations), markers, sets, size)
