"""The Redis counter store: dedupe, burn-down and exact counters in Lua.

Every write path is one Lua script call, so a batch is counted entirely or not
at all, and the dedupe markers are written in the same atomic step as the
counts they guard. Python never formats values into a script: the scripts live
in ``meterd/lua/*.lua`` and are registered once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from importlib import resources
from typing import Any, cast

import redis

from meterd.errors import UnavailableError
from meterd.events import UsageEvent
from meterd.notifications import CROSSING_FIELD_PREFIX, Crossing
from meterd.redis_keys import RedisKeys
from meterd.timeutil import epoch_micros, month_start


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


_BY_CHARACTER = {code.value: code for code in ScriptCode}


class CounterStoreError(UnavailableError):
    """Redis could not be reached or refused a command."""


def _load_script(name: str) -> str:
    return resources.files("meterd").joinpath("lua", name).read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class FlushBatchContent:
    """A flush batch: micro-units per period field, and the threshold crossings
    recorded with them (see ingest.lua)."""

    deltas: dict[str, int]
    crossings: list[Crossing]


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
        dedupe_ttl: timedelta,
        late_window: timedelta,
    ) -> None:
        self.client = client
        self.keys = keys
        self.dedupe_ttl = dedupe_ttl
        self.late_window = late_window
        self._late_window_us = int(late_window.total_seconds()) * 1_000_000
        self._ingest = client.register_script(_load_script("ingest.lua"))
        self._flush_begin = client.register_script(_load_script("flush_begin.lua"))
        self._flush_end = client.register_script(_load_script("flush_end.lua"))
        self._snapshot = client.register_script(_load_script("pending_snapshot.lua"))

    # -- ingest ---------------------------------------------------------------

    def add_batch(
        self, events: Sequence[UsageEvent], *, now: datetime, strict: bool = False
    ) -> list[ScriptCode]:
        """Count a batch in one script call; returns the code of each event.

        ``MISSING_RESOLUTION`` means the customer's resolution data was not cached:
        nothing was written for that event and the caller should load it and retry
        (``services.counting.UsageCounter`` does). ``strict`` (a reservation): an
        event that does not fit in the room its PRE_PAID entitlements have left is
        refused whole (``NO_ROOM``) instead of being counted as overage.
        """
        if not events:
            return []
        keys: list[str] = [self.keys.pending, self.keys.pending_since, self.keys.stats("events")]
        args: list[str | int] = [
            epoch_micros(now),
            self._late_window_us,
            max(int(self.dedupe_ttl.total_seconds() * 1000), 1),
            1 if strict else 0,
        ]
        months: dict[tuple[int, int], int] = {}
        dedupe_key, resolution_key, used_key = (
            self.keys.dedupe,
            self.keys.resolution,
            self.keys.used,
        )
        for event in events:
            org, customer = event.org, event.customer
            keys += (
                dedupe_key(org, event.source, event.id),
                resolution_key(org, customer, event.feature),
                used_key(org, customer),
            )
            when = event.time
            month = months.get((when.year, when.month))
            if month is None:
                month = months[(when.year, when.month)] = epoch_micros(month_start(when))
            args += (
                epoch_micros(when),
                month,
                event.quantity_micros,
                event.entitlement_id.hex if event.entitlement_id else "",
            )
        try:
            result = self._ingest(keys=keys, args=args)
        except redis.RedisError as exc:
            raise CounterStoreError(f"counting a batch failed: {exc}") from exc
        text = result.decode() if isinstance(result, bytes) else str(result)
        return [_BY_CHARACTER[c] for c in text]

    def store_resolutions(
        self,
        entries: Sequence[tuple[str, str, str, str, int, Mapping[str, int]]],
        *,
        replace: bool,
    ) -> None:
        """Cache resolution data, with the running totals it needs, in one round trip.

        Each entry: (org, customer, feature, payload, ttl seconds, flushed micros by
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
            for field, micros in flushed.items():
                pipe.hsetnx(used_key, field, micros)
            pipe.set(self.keys.resolution(org, customer, feature), payload, ex=ttl, nx=not replace)
        pipe.execute()

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
            field = raw_field.decode()
            if field.startswith(CROSSING_FIELD_PREFIX):
                content.crossings.append(Crossing.parse(field, value.decode()))
            else:
                content.deltas[field] = int(value)
        return content

    def end_flush(self, batch_id: str) -> bool:
        k = self.keys
        return bool(
            self._flush_end(
                keys=[k.flush_inflight, k.flush_batch, k.flush_batch_since], args=[batch_id]
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
