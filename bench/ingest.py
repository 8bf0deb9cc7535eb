"""Ingest throughput: publish -> counted in Redis, with a real `celery worker`.

Measures three numbers in one run, on the machine's Redis (db 11, a fresh
key prefix per scenario, removed afterwards):

* meterd:  batches of --batch-size events per Celery task, a real worker
           process (prefork, --concurrency children), from the first publish
           until the last event is counted in Redis. Two more rows for it:
           ``redis us/event``, the counter Redis's EVALSHA time over that window
           (``INFO commandstats``) per event, and ``worker us/event``, the CPU
           time (user + system) of the worker's process group (main process and
           pool children) per event (bench/measure.py).
* naive:   the same worker, one Celery task per event (batch size 1).
* ceiling: the same Lua script driven directly from this one Python process
           with pre-validated events (no broker, no validation, no worker).
* tokens:  the meterd row's worker and batches, with raw ``llm.request`` events
           that each feed two SUM meters (input and output tokens, scale 0):
           two counted items an event, so its ratio to the meterd row is what a
           two-feature meter costs.

Then two rows for the late path, after the others (so they do not change them),
with the dedupe service (``UsageCounter.count``, one process, pre-validated
events, chunks of --batch-size):

* hot:     events timed now (a marker miss means new);
* late:    events timed more than the hot window ago (METERD_DEDUPE_TTL): each
           chunk is searched in the event log, then counted in a confirmed
           call. The log holds the hot row's events (flushed, untimed) first,
           and on PostgreSQL a partition a day for the whole retention (each
           partition's key index is probed per id); measured as just written,
           then again after ANALYZE (the planner's statistics decide how
           PostgreSQL runs the search).

By default the counters and the broker each run on a private redis-server the
bench starts (no persistence; bench/measure.py), so that EVALSHA's time is the
ingest script's alone (the broker's pop is a script too) and no other program's
commands land in it; BENCH_REDIS_URL runs everything on that Redis instead (the
redis us/event row then includes the broker's scripts and anything else running
there). The same row against b6213b7, back to back: bench/ingest_vs_old.py.

    python bench/ingest.py                      # defaults: 200k events, 1000 customers
    python bench/ingest.py --events 500000 --concurrency 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

import redis

from measure import evalsha_usec, group_cpu_seconds, process_cpu_seconds
from meterd.celery_config import INGEST_QUEUE, create_app, worker_command
from meterd.config import Settings
from meterd.core.event_parsing import parse_event
from meterd.core.events import UsageEvent
from meterd.core.timeutil import utcnow
from meterd.producer import publish_batches, usage_event
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.storage.counters import ScriptCode
from meterd.storage.migrate import upgrade
from meterd.testing import PrivateRedis

#: The counter Redis and the broker (main() starts private ones unless BENCH_REDIS_URL).
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
BROKER_URL = REDIS_URL
#: The private counter redis-server's pid (its CPU time: the cross-check of EVALSHA's).
REDIS_PID: int | None = None


TOKEN_FEATURES = {"input_tokens": "usage.input", "output_tokens": "usage.output"}


def make_runtime(
    database_url: str,
    prefix: str,
    customers: int,
    starts_ago: timedelta = timedelta(days=1),
    *,
    tokens: bool = False,
) -> Runtime:
    settings = Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        broker_url=BROKER_URL,
        broker_key_prefix=f"{prefix}-q:",
        redis_prefix=prefix,
        _env_file=None,  # type: ignore[call-arg]
    )
    rt = Runtime.from_settings(settings)
    now = utcnow()
    rt.catalog.create_org(prefix, prefix, now)
    features = ["api_calls"]
    rt.catalog.create_feature(prefix, "api_calls", now=now)
    if tokens:
        features = list(TOKEN_FEATURES)
        for key, path in TOKEN_FEATURES.items():
            rt.catalog.create_feature(
                prefix, key, now=now, scale=0, event_type="llm.request", value_property=path
            )
    for feature in features:
        for c in range(customers):
            rt.catalog.create_entitlement(
                NewEntitlement(
                    org=prefix,
                    customer_id=f"c{c}",
                    feature=feature,
                    quantity=Decimal(10**9),
                    starts_at=now - starts_ago,
                    ends_at=now + timedelta(days=30),
                ),
                now,
            )
    # Warm the resolution cache as a running system would have it.
    rt.resolution.refresh(
        [(prefix, f"c{c}", feature) for c in range(customers) for feature in features], now
    )
    return rt


def make_events(org: str, n: int, customers: int, skew: float = 0.0) -> list[dict[str, Any]]:
    """``skew`` 0: customers drawn uniformly (the worst case for per-batch aggregation);
    ``skew`` s > 0: Zipf-like, customer k drawn with weight 1 / (k + 1) ** s."""
    rng = random.Random(7)
    population = range(customers)
    weights = [1 / (k + 1) ** skew for k in population] if skew else None
    drawn = rng.choices(population, weights=weights, k=n)
    return [
        usage_event(
            org=org,
            customer=f"c{drawn[i]}",
            feature="api_calls",
            quantity="1",
            event_id=f"e{i}",
            source="bench",
        )
        for i in range(n)
    ]


def make_token_events(org: str, n: int, customers: int) -> list[dict[str, Any]]:
    """LLM requests: each feeds input_tokens and output_tokens."""
    rng = random.Random(7)
    return [
        {
            "specversion": "1.0",
            "id": f"r{i}",
            "source": "bench",
            "type": "llm.request",
            "subject": f"c{rng.randrange(customers)}",
            "org": org,
            "data": {
                "model": "gpt-4o",
                "usage": {"input": rng.randrange(1, 4000), "output": rng.randrange(1, 800)},
            },
        }
        for i in range(n)
    ]


def counted(rt: Runtime, customers: int) -> int:
    pipe = rt.redis.pipeline(transaction=False)
    for c in range(customers):
        pipe.hvals(rt.redis_keys.used(rt.settings.redis_prefix, f"c{c}"))
    return sum(int(v) for values in pipe.execute() for v in values) // 10**6


def cleanup(rt: Runtime) -> None:
    for pattern in (f"{rt.settings.redis_prefix}:*", f"{rt.settings.redis_prefix}-q:*"):
        keys = list(rt.redis.scan_iter(match=pattern, count=5000))
        for i in range(0, len(keys), 1000):
            rt.redis.delete(*keys[i : i + 1000])


def run_worker_scenario(
    rt: Runtime,
    events: list[dict[str, Any]],
    batch_size: int,
    concurrency: int,
    customers: int,
    items_per_event: int = 1,
) -> Measured:
    env = {
        **os.environ,
        "METERD_DATABASE_URL": rt.settings.database_url,
        "METERD_REDIS_URL": REDIS_URL,
        "METERD_BROKER_URL": BROKER_URL,
        "METERD_BROKER_KEY_PREFIX": rt.settings.broker_key_prefix,
        "METERD_REDIS_PREFIX": rt.settings.redis_prefix,
        "METERD_UNSAFE_REDIS": "1",  # the machine's Redis has no AOF
    }
    worker = subprocess.Popen(
        worker_command((INGEST_QUEUE,), concurrency),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    app = create_app(rt.settings)
    try:
        # Warm-up: the worker is up and its children have connections.
        warm = [dict(e, id=f"warm-{i}") for i, e in enumerate(events[: concurrency * 4])]
        publish_batches(app, warm, 1)
        stats_key = rt.redis_keys.stats("events")

        def accepted() -> int:
            return int(cast(bytes | None, rt.redis.hget(stats_key, "accepted")) or 0)

        deadline = time.monotonic() + 60
        while accepted() < len(warm) * items_per_event:
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not start")
            time.sleep(0.05)
        target = len(warm) + len(events)
        usec0, cpu0 = evalsha_usec(rt.redis), group_cpu_seconds(worker.pid)
        pool0 = group_cpu_seconds(worker.pid, leader=False)
        server0 = process_cpu_seconds(REDIS_PID) if REDIS_PID else 0.0
        # Poll cheaply (one HGET of the accepted count, which the ingest script bumps
        # with the counts; markers are no longer one key each, so DBSIZE cannot tell)
        # so the measurement does not steal Redis time from the worker; confirm exactly.
        start = time.perf_counter()
        publish_batches(app, events, batch_size)
        published = time.perf_counter() - start
        while accepted() < target * items_per_event:
            time.sleep(0.005)
        while items_per_event == 1 and counted(rt, customers) < target:
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        usec1, cpu1 = evalsha_usec(rt.redis), group_cpu_seconds(worker.pid)
        pool1 = group_cpu_seconds(worker.pid, leader=False)
        server1 = process_cpu_seconds(REDIS_PID) if REDIS_PID else None
        print(f"  published in {published:.2f}s, counted in {elapsed:.2f}s", file=sys.stderr)
        n = len(events)
        server_us = None if server1 is None else (server1 - server0) * 1e6 / n
        return Measured(
            n / elapsed,
            (usec1 - usec0) / n,
            (cpu1 - cpu0) * 1e6 / n,
            (pool1 - pool0) * 1e6 / n,
            server_us,
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        app.close()


@dataclass(frozen=True, slots=True)
class Measured:
    """A worker row: events/s, and per event the counter Redis's EVALSHA time and the
    worker process group's CPU time, both in microseconds."""

    rate: float
    redis_us: float
    worker_us: float
    #: Of ``worker_us``, the pool children's (the tasks; the main process receives).
    pool_us: float
    #: The private counter redis-server's CPU time per event (None on BENCH_REDIS_URL).
    server_us: float | None = None


def run_ceiling(rt: Runtime, events: list[dict[str, Any]], batch_size: int) -> float:
    now = utcnow()
    parsed = [parse_event(e, received_at=now) for e in events]
    valid = [p for p in parsed if isinstance(p, UsageEvent)]
    start = time.perf_counter()
    for i in range(0, len(valid), batch_size):
        rt.counters.add_batch(valid[i : i + batch_size], now=now)
    return len(valid) / (time.perf_counter() - start)


def run_counting(
    rt: Runtime, events: list[dict[str, Any]], batch_size: int, age: timedelta
) -> float:
    """Events/s of ``UsageCounter.count`` (the dedupe service: log search included)
    for events timed ``age`` ago, every one of them accepted."""
    now = utcnow()
    when = now - age
    parsed = [parse_event(e, received_at=when) for e in events]
    valid = [p for p in parsed if isinstance(p, UsageEvent)]
    start = time.perf_counter()
    accepted = 0
    for i in range(0, len(valid), batch_size):
        codes = rt.counting.count(valid[i : i + batch_size], now)
        accepted += sum(code is ScriptCode.ACCEPTED for code in codes)
    rate = len(valid) / (time.perf_counter() - start)
    if accepted != len(events):
        raise RuntimeError(f"{accepted:,} of {len(events):,} events accepted")
    return rate


def late_scenario(args: argparse.Namespace, db: str) -> tuple[float, float, float]:
    """(hot, late, late after ANALYZE) events/s of the dedupe service, on one runtime."""
    prefix = f"bench-late-{uuid.uuid4().hex[:6]}"
    rt = make_runtime(db, prefix, args.customers, starts_ago=timedelta(days=3))
    try:
        n = args.late_events
        events = make_events(prefix, n, args.customers, args.skew)
        print(f"hot (counting service): {n:,} events ...", file=sys.stderr)
        hot = run_counting(rt, events, args.batch_size, timedelta(0))
        rt.flush.flush_all(utcnow())  # the log now holds the hot row's events
        # As in production: a partition a day for the whole retention (the beat
        # job's work), each probed by the log search.
        rt.event_log.maintain(utcnow(), retention=timedelta(seconds=rt.settings.retention_seconds))
        print(f"  log partitions: {rt.event_log.figures().partitions}", file=sys.stderr)
        age = rt.counters.hot_window + timedelta(hours=1)
        rates = []
        for label in ("fresh", "analyzed"):
            if label == "analyzed":  # what autovacuum does within a minute or so
                with rt.database.engine.begin() as conn:
                    conn.exec_driver_sql("ANALYZE event_log")
            late_events = [dict(e, id=f"late-{label}-{i}") for i, e in enumerate(events)]
            print(
                f"late (older than the hot window, {label} log): {n:,} events ...", file=sys.stderr
            )
            rates.append(run_counting(rt, late_events, args.batch_size, age))
        return hot, rates[0], rates[1]
    finally:
        cleanup(rt)
        rt.close()


def scenario(
    name: str, args: argparse.Namespace, db: str, n: int, batch: int | None
) -> Measured | float:
    prefix = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    tokens = name == "tokens"
    rt = make_runtime(db, prefix, args.customers, tokens=tokens)
    try:
        print(f"{name}: {n:,} events ...", file=sys.stderr)
        if tokens:
            events = make_token_events(prefix, n, args.customers)
            assert batch is not None
            return run_worker_scenario(rt, events, batch, args.concurrency, args.customers, 2)
        events = make_events(prefix, n, args.customers, args.skew)
        if batch is None:
            return run_ceiling(rt, events, args.batch_size)
        return run_worker_scenario(rt, events, batch, args.concurrency, args.customers)
    finally:
        cleanup(rt)
        rt.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--naive-events", type=int, default=10_000)
    parser.add_argument(
        "--late-events", type=int, default=50_000, help="events of the hot and late rows"
    )
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--skew", type=float, default=0.0, help="0 = uniform customers; 1.1 = Zipf-like traffic"
    )
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if "BENCH_REDIS_URL" not in os.environ:
            global REDIS_URL, BROKER_URL, REDIS_PID
            counters = stack.enter_context(PrivateRedis())
            assert counters.proc is not None
            REDIS_URL, REDIS_PID = counters.url, counters.proc.pid
            BROKER_URL = stack.enter_context(PrivateRedis()).url
        redis.Redis.from_url(REDIS_URL).ping()
        run(args)


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = args.database_url or f"sqlite:///{tmp}/bench.db"
        upgrade(db)
        runs = {
            "meterd (batched tasks, real worker)": scenario(
                "meterd", args, db, args.events, args.batch_size
            ),
            "naive (one task per event)": scenario("naive", args, db, args.naive_events, 1),
            "ceiling (Lua script, one process)": scenario("ceiling", args, db, args.events, None),
            "tokens (llm.request -> input + output tokens, real worker)": scenario(
                "tokens", args, db, args.events, args.batch_size
            ),
        }
        hot, late, late_analyzed = late_scenario(args, db)
    measured = runs["meterd (batched tasks, real worker)"]
    assert isinstance(measured, Measured)
    rates = {name: r.rate if isinstance(r, Measured) else r for name, r in runs.items()}
    meterd, naive, ceiling, tokens = rates.values()
    rates["hot (counting service, one process)"] = hot
    rates["late (older than the hot window: log searched; log just written)"] = late
    rates["late (the same, after ANALYZE event_log)"] = late_analyzed
    print()
    print("| scenario | events/s |")
    print("|---|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} |")
    print()
    where = "private redis-servers" if "BENCH_REDIS_URL" not in os.environ else REDIS_URL
    print(f"meterd row, per event ({where}):")
    print(f"  redis us/event  = {measured.redis_us:.1f} (EVALSHA time, INFO commandstats)")
    if measured.server_us is not None:
        print(f"  (redis-server CPU us/event = {measured.server_us:.1f}: all its work, CPU time)")
    print(f"  worker us/event = {measured.worker_us:.1f} (worker process group's CPU time)")
    print(f"  (of it the pool children: {measured.pool_us:.1f})")
    print(f"  load average    = {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print()
    print(f"meterd / naive   = {meterd / naive:.1f}x")
    print(f"meterd / ceiling = {meterd / ceiling:.2f}")
    print(f"tokens / meterd  = {tokens / meterd:.2f} (events/s; each token event is 2 items)")
    print(
        f"late / hot       = {late / hot:.2f} (log just written), "
        f"{late_analyzed / hot:.2f} (after ANALYZE)"
    )


if __name__ == "__main__":
    main()
