"""Event log write throughput on PostgreSQL: the flush's full path against the
database's own floor, and the log's disk bytes per event.

Creates a scratch PostgreSQL database (dropped afterwards) and a Redis key prefix
(db 11 of the machine's Redis, removed afterwards; no memory figure is taken
from it), --customers customers with an unlimited grant each. Then, in one run:

* flush: --events events ingested (untimed; event times spread over the last
  --spread seconds, as live traffic) in rounds of --per-flush, each round
  flushed by ``flush.flush_once`` (timed): Redis batch rename and read, the
  counts, the COPY into the day partition with its two indexes, the
  quarter-hour rollups, one transaction.
* floor: the same rows, read back from the log, written in the same rounds
  (one transaction each) by a plain COPY into a non-partitioned table of the
  same columns with no index: logged, then UNLOGGED; and by INSERT executemany.
* disk: pg_total_relation_size of the partitions (heap, TOAST, indexes) per
  row, of the floor table per row, and of the rollups per rollup row.
* SQLite (secondary, --sqlite-events, 0 to skip): the flush's path into a
  temporary SQLite file, against executemany into a plain table.

    python bench/event_log.py                       # 200k events in rounds of 5,000
    python bench/event_log.py --per-flush 20000     # bigger flush batches
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
import redis

from meterd.config import Settings
from meterd.core.timeutil import isoformat, utcnow
from meterd.producer import usage_event
from meterd.runtime import Runtime
from meterd.storage.migrate import upgrade
from scratch import REDIS_URL, scratch_settings, unlimited_customers

ORG = "bench"
FEATURE = "api_calls"
#: Default retention of the log: the late window (35 days) plus a day (Settings).
RETENTION_DAYS = round(Settings.model_fields["late_window"].default / 86400) + 1


def make_events(
    n: int, first: int, customers: int, now: datetime, spread: float
) -> list[dict[str, Any]]:
    """Distinct events of uniformly drawn customers, timed over the last ``spread`` s."""
    rng = random.Random(first)
    return [
        usage_event(
            org=ORG,
            customer=f"c{rng.randrange(customers)}",
            feature=FEATURE,
            quantity="1",
            event_id=f"e{first + i}",
            source="bench",
            time=isoformat(now - timedelta(seconds=rng.uniform(0, spread))),
        )
        for i in range(n)
    ]


@contextmanager
def timed_parts(rt: Runtime) -> Iterator[dict[str, float]]:
    """Seconds the flushes spend in their database transaction, in the log's append
    (partition check, COPY, rollups) and in the rollups alone."""
    spent = {"transaction": 0.0, "append": 0.0, "rollups": 0.0}
    targets: list[tuple[Any, str, str]] = [
        (rt.usage, "apply_flush_batch", "transaction"),
        (rt.event_log, "append", "append"),
        (rt.event_log, "_add_rollups", "rollups"),
    ]
    for owner, name, label in targets:
        setattr(owner, name, _timer(getattr(owner, name), spent, label))
    try:
        yield spent
    finally:
        for owner, name, _ in targets:
            delattr(owner, name)


def _timer(method: Any, spent: dict[str, float], label: str) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - start

    return timed


def flush_path(rt: Runtime, args: argparse.Namespace, events: int) -> dict[str, float]:
    """Ingest (untimed) and flush (timed) in rounds; the flush's rows/s and events/s."""
    flush_s = 0.0
    logged = 0
    with timed_parts(rt) as parts:
        for first in range(0, events, args.per_flush):
            n = min(args.per_flush, events - first)
            now = utcnow()
            batch = make_events(n, first, args.customers, now, args.spread)
            report = rt.ingest.ingest(batch, now=now)
            if report.counts.get("accepted", 0) != n:
                raise RuntimeError(f"expected every event accepted, got {dict(report.counts)}")
            start = time.perf_counter()
            flushed = rt.flush.flush_once(now)
            flush_s += time.perf_counter() - start
            logged += flushed.events
    return {"seconds": flush_s, "events": logged, **parts}


# -- PostgreSQL floor -------------------------------------------------------------------


def pg_rows(url: str) -> list[tuple[Any, ...]]:
    """Every row of the log, as Python values (``data`` as JSON text, as the flush
    writes it)."""
    with psycopg.connect(url) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'event_log'::regclass "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            )
        ]
        data = names.index("data")
        rows = []
        for row in conn.execute("SELECT * FROM event_log"):
            values = list(row)
            if values[data] is not None:
                values[data] = json.dumps(values[data])
            rows.append(tuple(values))
    return rows


def pg_floor(
    url: str, rows: Sequence[tuple[Any, ...]], per_flush: int, table: str, how: str
) -> float:
    """Seconds to write ``rows`` in rounds of ``per_flush``, one transaction each."""
    kind = "UNLOGGED " if how == "copy-unlogged" else ""
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE {kind}TABLE {table} (LIKE event_log)")
        conn.commit()
        width = len(rows[0])
        insert = f"INSERT INTO {table} VALUES ({', '.join(['%s'] * width)})"
        start = time.perf_counter()
        for first in range(0, len(rows), per_flush):
            chunk = rows[first : first + per_flush]
            with conn.cursor() as cursor:
                if how == "insert":
                    cursor.executemany(insert, chunk)
                else:
                    with cursor.copy(f"COPY {table} FROM STDIN") as copy:
                        for row in chunk:
                            copy.write_row(row)
            conn.commit()
        return time.perf_counter() - start


def pg_disk(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        conn.execute("CHECKPOINT")
        log = conn.execute(
            "SELECT count(*), coalesce(sum(pg_total_relation_size(c.oid)), 0), "
            "coalesce(sum(pg_relation_size(c.oid)), 0), "
            "coalesce(sum(pg_indexes_size(c.oid)), 0) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'event_log'::regclass"
        ).fetchone()
        rows = conn.execute("SELECT count(*) FROM event_log").fetchone()
        rollups = conn.execute(
            "SELECT count(*), pg_total_relation_size('usage_rollups') FROM usage_rollups"
        ).fetchone()
        floor = conn.execute("SELECT pg_total_relation_size('bench_floor_copy')").fetchone()
        conn.commit()
        # The upserts leave dead versions behind until (auto)vacuum: the live size too.
        conn.autocommit = True
        conn.execute("VACUUM FULL usage_rollups")
        compact = conn.execute("SELECT pg_total_relation_size('usage_rollups')").fetchone()
    assert log is not None and rows is not None and rollups is not None and floor is not None
    assert compact is not None
    return {
        "partitions": int(log[0]),
        "log_bytes": int(log[1]),
        "heap_bytes": int(log[2]),
        "index_bytes": int(log[3]),
        "rows": int(rows[0]),
        "rollup_rows": int(rollups[0]),
        "rollup_bytes": int(rollups[1]),
        "floor_bytes": int(floor[0]),
        "rollup_compact_bytes": int(compact[0]),
    }


# -- SQLite -----------------------------------------------------------------------------


def sqlite_run(settings: Settings, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    path = f"{tmp}/log.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    prefix = settings.redis_prefix + "-sq"
    rt = Runtime.from_settings(
        settings.model_copy(update={"database_url": url, "redis_prefix": prefix})
    )
    try:
        unlimited_customers(rt, ORG, FEATURE, args.customers, utcnow())
        flush = flush_path(rt, args, args.sqlite_events)
        raw: Any = rt.database.engine.raw_connection()
        try:
            conn: sqlite3.Connection = raw.driver_connection
            rows = conn.execute("SELECT * FROM event_log").fetchall()
            conn.execute("CREATE TABLE bench_floor AS SELECT * FROM event_log WHERE 0")
            conn.commit()
            marks = ", ".join("?" * len(rows[0]))
            start = time.perf_counter()
            for first in range(0, len(rows), args.per_flush):
                conn.executemany(
                    f"INSERT INTO bench_floor VALUES ({marks})",
                    rows[first : first + args.per_flush],
                )
                conn.commit()
            floor_s = time.perf_counter() - start
            log_bytes: int | None
            try:
                log_bytes = sum(
                    int(r[0])
                    for r in conn.execute(
                        "SELECT sum(pgsize) FROM dbstat WHERE name = 'event_log' "
                        "OR tbl_name = 'event_log' GROUP BY name"
                    )
                )
            except sqlite3.OperationalError:  # no dbstat in this build
                log_bytes = None
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            file_bytes = page * conn.execute("PRAGMA page_count").fetchone()[0]
        finally:
            raw.close()
        return {
            "events": flush["events"],
            "rows": len(rows),
            "flush_s": flush["seconds"],
            "transaction_s": flush["transaction"],
            "floor_s": floor_s,
            "log_bytes": log_bytes,
            "file_bytes": file_bytes,
        }
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()
        rt.close()


# -- report -----------------------------------------------------------------------------


def rate(n: float, seconds: float) -> str:
    return f"{n / seconds:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--per-flush", type=int, default=5_000, help="events per flush")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument(
        "--spread", type=float, default=60, help="event times over the last N seconds"
    )
    parser.add_argument("--sqlite-events", type=int, default=50_000, help="0: no SQLite run")
    parser.add_argument("--scale-rate", type=int, default=1000, help="events/s to scale to")
    args = parser.parse_args()

    with scratch_settings("elog") as settings, tempfile.TemporaryDirectory() as tmp:
        url = settings.database_url
        rt = Runtime.from_settings(settings)
        unlimited_customers(rt, ORG, FEATURE, args.customers, utcnow())
        print(f"flush: {args.events:,} events in rounds of {args.per_flush:,} ...", file=sys.stderr)
        flush = flush_path(rt, args, args.events)
        rt.close()
        rows = pg_rows(url)
        print(f"floor: {len(rows):,} rows, COPY and INSERT ...", file=sys.stderr)
        floors: dict[str, float] = {}
        for how, table in (
            ("copy", "bench_floor_copy"),
            ("copy-unlogged", "bench_floor_unlogged"),
            ("insert", "bench_floor_insert"),
        ):
            floors[how] = pg_floor(url, rows, args.per_flush, table, how)
        disk = pg_disk(url)
        sqlite = None
        if args.sqlite_events:
            print(f"sqlite: {args.sqlite_events:,} events ...", file=sys.stderr)
            sqlite = sqlite_run(settings, args, tmp)

    n_rows = len(rows)
    print()
    print(
        f"PostgreSQL, {flush['events']:,} events = {n_rows:,} log rows, "
        f"{args.customers:,} customers, {args.per_flush:,} events per flush/transaction"
    )
    print()
    print("| path | rows/s | events/s | seconds | time / floor's |")
    print("|---|---:|---:|---:|---:|")
    copy_rate = n_rows / floors["copy"]
    lines = [
        ("flush_once, full path (Redis + counts + COPY + rollups)", flush["seconds"]),
        ("· of which the database transaction", flush["transaction"]),
        ("· · of which the log's append (COPY + rollups)", flush["append"]),
        ("· · · of which the rollups' upsert", flush["rollups"]),
        (
            "· · · of which the COPY into the log (+ partition check)",
            flush["append"] - flush["rollups"],
        ),
        ("floor: COPY, plain table, no index", floors["copy"]),
        ("COPY, UNLOGGED table, no index", floors["copy-unlogged"]),
        ("INSERT executemany, plain table, no index", floors["insert"]),
    ]
    for label, seconds in lines:
        events = flush["events"] if label.startswith(("flush", "·")) else n_rows
        print(
            f"| {label} | {rate(n_rows, seconds)} | {rate(events, seconds)} | {seconds:.2f} "
            f"| {copy_rate / (n_rows / seconds):.2f} |"
        )
    print()
    print(
        f"flush / floor COPY = {floors['copy'] / flush['seconds']:.2f} "
        f"(the flush writes at {100 * floors['copy'] / flush['seconds']:.0f}% of the database's "
        "own COPY rate)"
    )
    print(f"flush / INSERT executemany = {floors['insert'] / flush['seconds']:.2f}")

    per_event = disk["log_bytes"] / disk["rows"]
    day = args.scale_rate * 86400
    print()
    print(f"disk, after CHECKPOINT ({disk['partitions']} day partition(s)):")
    print()
    print("| relation | bytes | rows | B/row |")
    print("|---|---:|---:|---:|")
    log_rows, rollup_rows = disk["rows"], disk["rollup_rows"]
    for label, size, count in (
        ("event_log partitions, total", disk["log_bytes"], log_rows),
        ("· heap", disk["heap_bytes"], log_rows),
        ("· indexes (primary key, customer+time)", disk["index_bytes"], log_rows),
        ("floor table (same rows, no index)", disk["floor_bytes"], n_rows),
        ("usage_rollups, as written (upserts' dead versions)", disk["rollup_bytes"], rollup_rows),
        ("usage_rollups, after VACUUM FULL", disk["rollup_compact_bytes"], rollup_rows),
    ):
        print(f"| {label} | {size:,} | {count:,} | {size / max(count, 1):.0f} |")
    rollup_row = disk["rollup_compact_bytes"] / max(disk["rollup_rows"], 1)
    print()
    print(
        f"at {args.scale_rate:,} events/s: log {day * per_event / 2**30:,.1f} GiB/day, "
        f"{RETENTION_DAYS * day * per_event / 2**30:,.0f} GiB over the default retention "
        f"({RETENTION_DAYS} days); rollups {96 * rollup_row / 1024:,.1f} KiB per active "
        "entitlement per day (96 quarter hours), whatever the rate"
    )
    if sqlite is not None:
        print()
        print("SQLite (secondary):")
        print()
        print("| path | rows/s | events/s | seconds |")
        print("|---|---:|---:|---:|")
        s_rows, s_events = sqlite["rows"], sqlite["events"]
        for label, seconds, events in (
            ("flush_once, full path", sqlite["flush_s"], s_events),
            ("· of which the database transaction", sqlite["transaction_s"], s_events),
            ("floor: executemany, plain table", sqlite["floor_s"], s_rows),
        ):
            rates = f"{rate(s_rows, seconds)} | {rate(events, seconds)}"
            print(f"| {label} | {rates} | {seconds:.2f} |")
        print(f"\nflush / floor = {sqlite['floor_s'] / sqlite['flush_s']:.2f}")
        if sqlite["log_bytes"] is not None:
            print(f"log on disk: {sqlite['log_bytes'] / s_rows:.0f} B/row (dbstat)")
        else:
            print(
                "whole file (log, its copy in the floor table, catalog): "
                f"{sqlite['file_bytes'] / s_rows:.0f} B/log row (no dbstat in this SQLite)"
            )


if __name__ == "__main__":
    main()
