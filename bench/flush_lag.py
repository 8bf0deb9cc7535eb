"""Does the flush keep up? Ingest at the maximum rate for --seconds, flush lag watched.

The production layout on this machine, with real processes: an ingest worker
(--concurrency prefork children, queue ``meterd.ingest``), a flush worker (one
child, queue ``meterd.flush``) and ``celery beat`` sending the flush every
METERD_FLUSH_INTERVAL (5 s). This process publishes batches of --batch-size as
fast as the worker takes them (never more than --backlog events ahead of what
is counted, so the broker queue stays bounded) and samples the flush lag (age of
the oldest count not yet in the database, the ``meterd_flush_lag_seconds``
gauge) every 0.25 s. The database is a scratch PostgreSQL database (made and
dropped) unless --sqlite; the event log is on, as always.

Prints the ingest rate over the run, the maximum flush lag beside the flush
interval (the goal: under 3 intervals), and then checks exactness: every
published event is in ``usage_periods`` and in the event log, once.

    python bench/flush_lag.py                   # 120 s, PostgreSQL scratch database
    python bench/flush_lag.py --seconds 30 --sqlite
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import cast

from celery import Celery
from sqlalchemy import func, select

from ingest import REDIS_URL, cleanup, make_runtime
from meterd.celery_config import (
    FLUSH_QUEUE,
    INGEST_QUEUE,
    celery_command,
    create_app,
    worker_command,
)
from meterd.ops import flush_lag_seconds
from meterd.producer import publish_batches, usage_event
from meterd.runtime import Runtime
from meterd.storage.migrate import upgrade
from meterd.storage.models import UsagePeriod
from scratch import scratch_settings


@contextmanager
def database(use_sqlite: bool) -> Iterator[str]:
    if use_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            upgrade(url)
            yield url
    else:
        with scratch_settings("lag") as settings:
            yield settings.database_url


@contextmanager
def processes(rt: Runtime, concurrency: int, flush_interval: float) -> Iterator[None]:
    env = {
        **os.environ,
        "METERD_DATABASE_URL": rt.settings.database_url,
        "METERD_REDIS_URL": REDIS_URL,
        "METERD_BROKER_URL": REDIS_URL,
        "METERD_BROKER_KEY_PREFIX": rt.settings.broker_key_prefix,
        "METERD_REDIS_PREFIX": rt.settings.redis_prefix,
        "METERD_FLUSH_INTERVAL": str(flush_interval),
        "METERD_UNSAFE_REDIS": "1",  # the machine's Redis has no AOF
    }
    with tempfile.TemporaryDirectory() as tmp:
        argvs = [
            worker_command((INGEST_QUEUE,), concurrency, name="ingest@%h"),
            worker_command((FLUSH_QUEUE,), 1, name="flush@%h"),
            celery_command("beat", "-l", "warning", "-s", f"{tmp}/schedule"),
        ]
        started = [
            subprocess.Popen(
                argv,
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for argv in argvs
        ]
        try:
            yield
        finally:
            for p in started:
                os.killpg(p.pid, signal.SIGTERM)
            for p in started:
                p.wait(timeout=60)


def accepted(rt: Runtime) -> int:
    return int(cast(bytes | None, rt.redis.hget(rt.redis_keys.stats("events"), "accepted")) or 0)


def database_totals(rt: Runtime) -> tuple[Decimal, Decimal]:
    """(the event log's total, ``usage_periods``' total) in the scratch database."""
    with rt.database.sessions() as s:
        consumed = s.execute(select(func.sum(UsagePeriod.consumed))).scalar_one()
    logged = sum(rt.event_log.sums_by_period().values(), Decimal(0))
    return logged, Decimal(consumed or 0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--backlog", type=int, default=40_000)
    parser.add_argument("--flush-interval", type=float, default=5.0)
    parser.add_argument("--sqlite", action="store_true", help="a temporary SQLite file")
    args = parser.parse_args()

    with database(args.sqlite) as url:
        prefix = f"bench-lag-{uuid.uuid4().hex[:6]}"
        rt = make_runtime(url, prefix, args.customers)
        app = create_app(rt.settings)
        try:
            with processes(rt, args.concurrency, args.flush_interval):
                published, max_lag, rate = drive(rt, app, args, prefix)
                print("draining ...", file=sys.stderr)
                deadline = time.monotonic() + 300
                while accepted(rt) < published or flush_lag_seconds(rt) is not None:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the run did not drain in 5 minutes")
                    time.sleep(0.25)
            logged, periods = database_totals(rt)
        finally:
            app.close()
            cleanup(rt)
            rt.close()

    interval = args.flush_interval
    print()
    print(f"| figure ({args.seconds:.0f} s at the maximum ingest rate) | value |")
    print("|---|---:|")
    print(f"| events published and counted | {published:,} |")
    print(f"| ingest rate, publish -> counted in Redis | {rate:,.0f} events/s |")
    print(f"| flush interval (reference) | {interval:.1f} s |")
    print(f"| max flush lag | {max_lag:.1f} s |")
    print(f"| max lag / flush interval | {max_lag / interval:.2f} (goal < 3) |")
    print(f"| event log total after the drain | {logged:,.0f} (usage_periods: {periods:,.0f}) |")
    print()
    if logged != published or periods != published:
        raise SystemExit(f"NOT EXACT: published {published}, log {logged}, periods {periods}")
    print("exact: the log and the counts hold every published event once")
    if max_lag >= 3 * interval:
        raise SystemExit("the flush fell behind: max lag >= 3 flush intervals")


def drive(
    rt: Runtime, app: Celery, args: argparse.Namespace, prefix: str
) -> tuple[int, float, float]:
    """Publish for ``args.seconds``; returns (published, max lag, events/s counted)."""
    warm = [
        usage_event(org=prefix, customer="c0", feature="api_calls", quantity="1", event_id="warm")
    ]
    publish_batches(app, warm, 1)
    while accepted(rt) < 1:
        time.sleep(0.05)
    published, max_lag, seq = 1, 0.0, 0
    start = time.monotonic()
    next_sample = start
    chunk = args.batch_size * 10
    print(f"publishing for {args.seconds:.0f} s ...", file=sys.stderr)
    while (now := time.monotonic()) < start + args.seconds:
        if now >= next_sample:
            max_lag = max(max_lag, flush_lag_seconds(rt) or 0.0)
            next_sample = now + 0.25
        if published - accepted(rt) >= args.backlog:
            time.sleep(0.01)
            continue
        events = [
            usage_event(
                org=prefix,
                customer=f"c{(seq + i) % args.customers}",
                feature="api_calls",
                quantity="1",
                event_id=f"e{seq + i}",
                source="bench",
            )
            for i in range(chunk)
        ]
        seq += chunk
        publish_batches(app, events, args.batch_size)
        published += chunk
    counted_at_end = accepted(rt)
    rate = (counted_at_end - 1) / (time.monotonic() - start)
    # Keep watching the lag while the last published events are counted and flushed.
    while accepted(rt) < published:
        max_lag = max(max_lag, flush_lag_seconds(rt) or 0.0)
        time.sleep(0.25)
    return published, max_lag, rate


if __name__ == "__main__":
    main()
