"""The state and the batches the issue-25 profile runs on (research, not a benchmark
of record): a private redis-server, 1,000 customers each with one PRE_PAID monthly
(auto-renewing) entitlement of one SUM feature, and 20,000 one-unit events drawn
uniformly over them, cut into batches of 500 exactly as ``CounterStore.add_batch``
would pass them to ``ingest.lua`` (captured, not re-implemented).

The Redis state after the warm-up (resolution entries, and for ``steady`` the
marker generations of the past hot window) is kept as DUMP payloads so every
variant of the script starts from the same bytes.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import redis

from memory import make_runtime
from meterd.core.event_parsing import parse_event
from meterd.core.events import UsageEvent
from meterd.core.terms import Term
from meterd.core.timeutil import isoformat, utcnow
from meterd.producer import usage_event
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.storage.migrate import upgrade

ORG = "acme"
FEATURE = "api_calls"
HOT_WINDOW = timedelta(hours=24)  # the default; 4 marker generations of 6 h


@dataclass
class Batch:
    keys: list[str]
    args: list[Any]


@dataclass
class State:
    """What a variant needs: the batches, the snapshot to restore, the runtime."""

    batches: list[Batch]
    snapshot: list[tuple[bytes, int, bytes]]  # key, pttl (0: none), DUMP payload
    resolution_keys: list[str]
    now: datetime
    rt: Runtime
    raw: list[dict[str, Any]]


def raw_events(n: int, customers: int, when: datetime, tag: str) -> list[dict[str, Any]]:
    rng = random.Random(f"{tag}7")
    stamp = isoformat(when)
    return [
        usage_event(
            org=ORG,
            customer=f"c{rng.randrange(customers)}",
            feature=FEATURE,
            quantity="1",
            event_id=f"{tag}{i}",
            source="bench",
            time=stamp,
        )
        for i in range(n)
    ]


def make_events(n: int, customers: int, when: datetime, tag: str) -> list[UsageEvent]:
    parsed = [parse_event(e, received_at=when) for e in raw_events(n, customers, when, tag)]
    valid = [p for p in parsed if isinstance(p, UsageEvent)]
    assert len(valid) == n, "every bench event is valid"
    return valid


def events_in(args: list[Any]) -> int:
    """How many events an ingest.lua ARGV holds: one argument each, after the call's 9
    and the entries and candidates the worker gives (two arguments)."""
    return len(args) - 11


def capture_batches(rt: Runtime, events: list[UsageEvent], size: int, now: datetime) -> list[Batch]:
    """The (KEYS, ARGV) add_batch sends for each batch, captured from add_batch itself."""
    store = rt.counters
    real = store._ingest
    seen: list[Batch] = []

    def record(*, keys: list[str], args: list[Any]) -> bytes:
        seen.append(Batch(list(keys), [str(a) for a in args]))
        return b"a" * events_in(args)

    store._ingest = record  # type: ignore[assignment]
    try:
        for i in range(0, len(events), size):
            store.add_batch(events[i : i + size], now=now)
    finally:
        store._ingest = real
    return seen


def snapshot(client: redis.Redis) -> list[tuple[bytes, int, bytes]]:
    out = []
    for key in client.scan_iter(count=5000):
        ttl = int(client.pttl(key))
        out.append((key, max(ttl, 0), client.dump(key)))
    return out


def restore(client: redis.Redis, snap: list[tuple[bytes, int, bytes]]) -> None:
    client.flushdb()
    pipe = client.pipeline(transaction=False)
    for key, ttl, payload in snap:
        pipe.restore(key, ttl, payload)
    pipe.execute()


def build(
    client: redis.Redis,
    tmp: str,
    *,
    events: int,
    customers: int,
    batch: int,
    steady: bool,
) -> State:
    db = f"sqlite:///{tmp}/prof.db"
    upgrade(db)
    rt = make_runtime(client, db, "p25", HOT_WINDOW)
    now = utcnow()
    rt.catalog.create_org(ORG, ORG, now)
    rt.catalog.create_feature(ORG, FEATURE, now=now)
    for c in range(customers):
        rt.catalog.create_entitlement(
            NewEntitlement(
                org=ORG,
                customer_id=f"c{c}",
                feature=FEATURE,
                quantity=Decimal(10**9),
                starts_at=now - timedelta(days=40),
                auto_renew=True,
                term=Term(months=1),
            ),
            now,
        )
    rt.resolution.refresh([(ORG, f"c{c}", FEATURE) for c in range(customers)], now)
    if steady:
        # The hot window's past: every live marker generation holds markers, as in
        # production after a day (an event pays one SISMEMBER per such generation).
        gen = HOT_WINDOW / 4
        for back in (4, 3, 2, 1):
            when = now - gen * back + timedelta(minutes=1)
            old = make_events(events, customers, when, f"g{back}-")
            for i in range(0, len(old), batch):
                codes = rt.counters.add_batch(old[i : i + batch], now=when)
                assert all(c.value == "a" for c in codes), codes
        rt.flush.flush_all(now, max_batches=1000)  # nothing waits: only markers stay
    raw = raw_events(events, customers, now, "e")
    evs = [e for e in (parse_event(r, received_at=now) for r in raw) if isinstance(e, UsageEvent)]
    batches = capture_batches(rt, evs, batch, now)
    res_keys = [rt.redis_keys.resolution(ORG, f"c{c}", FEATURE) for c in range(customers)]
    return State(batches, snapshot(client), res_keys, now, rt, raw)


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="prof25-")
