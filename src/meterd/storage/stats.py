"""Operational counters and histograms, kept in Redis so they add up across every
worker process and survive restarts (Redis runs with AOF).

Celery's prefork children are separate processes: per-process Prometheus
metrics would need a multiprocess collector and a shared directory on each
host. Counting in Redis gives one cluster-wide number per metric instead, for
one pipelined round trip per batch (hundreds of events). ``meterd.metrics``
turns these into Prometheus metrics.

``P:stats:events``                 hash  outcome -> events
``P:stats:h:<name>``               hash  "le=<bound>" -> observations <= bound, "count", "sum_us"
``P:stats:transitions``            hash  target status -> transitions applied
``P:stats:notification_failures``  string  failed webhook calls
``P:stats:counted_twice``          string  events a flush found already in the event log
``P:stats:unreadable``             hash  kind -> messages no task could read as sent
``P:stats:store_unavailable``      hash  task -> tries that found a store unavailable
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import redis

from meterd.core.redis_keys import RedisKeys

#: Bucket bounds (upper, inclusive) of the histograms meterd keeps.
BUCKETS: dict[str, tuple[float, ...]] = {
    "ingest_batch_size": (1, 10, 50, 100, 250, 500, 1000, 5000),
    "ingest_duration_seconds": (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
    "flush_duration_seconds": (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0),
}


@dataclass(frozen=True, slots=True)
class Histogram:
    buckets: list[tuple[float, int]]  # (upper bound, cumulative count), +Inf last
    count: int
    total: float


class StatsStore:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys

    def record_ingest(self, outcomes: Mapping[str, int], size: int, seconds: float) -> None:
        """Record a batch: the outcomes decided before counting (invalid events, and
        events judged by their time) and its timings. The outcomes of counted events
        are added by ``ingest.lua`` in the step that decides them, so the numbers
        agree with the counts even when a worker dies right after."""
        pipe = self.client.pipeline(transaction=False)
        events = self.keys.stats("events")
        for outcome, n in outcomes.items():
            if n:
                pipe.hincrby(events, outcome, n)
        self._observe(pipe, "ingest_batch_size", size)
        self._observe(pipe, "ingest_duration_seconds", seconds)
        pipe.execute()

    def record_flush(self, seconds: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        self._observe(pipe, "flush_duration_seconds", seconds)
        pipe.execute()

    def record_transitions(self, by_target: Mapping[str, int]) -> None:
        if not by_target:
            return
        pipe = self.client.pipeline(transaction=False)
        for target, n in by_target.items():
            pipe.hincrby(self.keys.stats("transitions"), target, n)
        pipe.execute()

    def record_notification_failures(self, n: int) -> None:
        if n:
            self.client.incrby(self.keys.stats("notification_failures"), n)

    def _observe(self, pipe: redis.client.Pipeline, name: str, value: float) -> None:
        key = self.keys.stats(f"h:{name}")
        for bound in BUCKETS[name]:
            if value <= bound:
                pipe.hincrby(key, f"le={bound}", 1)
        pipe.hincrby(key, "count", 1)
        pipe.hincrby(key, "sum_us", round(value * 1_000_000))

    # -- reads ------------------------------------------------------------------------

    def events(self) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys.stats("events")))
        return {k.decode(): int(v) for k, v in raw.items()}

    def transitions(self) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys.stats("transitions")))
        return {k.decode(): int(v) for k, v in raw.items()}

    def notification_failures(self) -> int:
        raw = self.client.get(self.keys.stats("notification_failures"))
        return int(cast(bytes, raw)) if raw is not None else 0

    def record_counted_twice(self, n: int) -> None:
        if n:
            self.client.incrby(self.keys.stats("counted_twice"), n)

    def record_unreadable(self, kind: str, n: int = 1) -> None:
        """Messages (or payloads of one) a worker could not read as sent
        (``meterd.message_guard``; ``notification``: a notify payload dropped)."""
        self.client.hincrby(self.keys.stats("unreadable"), kind, n)

    def unreadable(self) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys.stats("unreadable")))
        return {k.decode(): int(v) for k, v in raw.items()}

    def record_store_unavailable(self, task: str, tries: int = 1) -> None:
        """Tries of a task that found Redis or the database unavailable (a full or
        absent Redis refuses the count: the task adds it once Redis takes it)."""
        self.client.hincrby(self.keys.stats("store_unavailable"), task, tries)

    def store_unavailable(self) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys.stats("store_unavailable")))
        return {k.decode(): int(v) for k, v in raw.items()}

    def counted_twice(self) -> int:
        raw = self.client.get(self.keys.stats("counted_twice"))
        return int(cast(bytes, raw)) if raw is not None else 0

    def histogram(self, name: str) -> Histogram:
        raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys.stats(f"h:{name}")))
        fields = {k.decode(): int(v) for k, v in raw.items()}
        count = fields.get("count", 0)
        buckets = [(bound, fields.get(f"le={bound}", 0)) for bound in BUCKETS[name]]
        buckets.append((float("inf"), count))
        return Histogram(buckets, count, fields.get("sum_us", 0) / 1_000_000)
