"""The ingest bench's meterd row, today's code against b6213b7 (the code of 2026-12-06,
issue 25), back to back in one run on this machine.

How each is run: the same scenario as bench/ingest.py's meterd row (--events
events of 1,000 customers drawn uniformly, batches of --batch-size, one
``celery worker -Q meterd.ingest -c --concurrency`` process; from the first
publish until the last event is counted in Redis), in a child process of this
script with ``PYTHONPATH`` naming one tree's ``src``: this worktree's, or
``git archive b6213b7`` extracted into a temporary directory
(tests/e2e/old_code.py), with the same interpreter and venv. The child imports
only what both versions have (``meterd.config``, ``runtime``, ``producer``,
``celery_config``, ``services.catalog``) and each version's own migrations.
Counters on one private redis-server, the broker on another (so that Redis's
EVALSHA time is the ingest script's alone), both started by this script with no
persistence and emptied between runs; a fresh SQLite file per run. Rounds
alternate which version runs first; medians over --rounds.

Per version: events/s; ``redis us/event``, the counter Redis's EVALSHA time
(``INFO commandstats``) over the measured window / events, and beside it the
counter redis-server's CPU time / events (all its work, but not inflated when a
busy machine deschedules it mid-command); ``worker us/event``,
the CPU time (user + system) of the worker's process group (main process and
pool children) over the window / events, and of it the pool children's (the
tasks: validation, keys, the ingest call; the main process receives the
broker's messages and hands them over). Then today / b6213b7 for each.

    nice -n 10 python bench/ingest_vs_old.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def child(args: argparse.Namespace) -> None:
    """One run of the meterd row under whichever ``meterd`` PYTHONPATH names."""
    import signal
    import uuid
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from measure import evalsha_usec, group_cpu_seconds, process_cpu_seconds
    from meterd.celery_config import INGEST_QUEUE, create_app, worker_command
    from meterd.config import Settings
    from meterd.producer import publish_batches, usage_event
    from meterd.runtime import Runtime
    from meterd.services.catalog import NewEntitlement

    try:
        from meterd.storage.migrate import upgrade
    except ImportError:  # b6213b7
        from meterd.migrate import upgrade  # type: ignore[import-not-found,no-redef]

    import random

    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/bench.db"
        upgrade(db)
        prefix = f"vs-{uuid.uuid4().hex[:6]}"
        settings = Settings(
            database_url=db,
            redis_url=args.redis_url,
            broker_url=args.broker_url,
            broker_key_prefix=f"{prefix}-q:",
            redis_prefix=prefix,
            _env_file=None,  # type: ignore[call-arg]
        )
        rt = Runtime.from_settings(settings)
        now = datetime.now(UTC)
        rt.catalog.create_org(prefix, prefix, now)
        rt.catalog.create_feature(prefix, "api_calls", now=now)
        for c in range(args.customers):
            rt.catalog.create_entitlement(
                NewEntitlement(
                    org=prefix,
                    customer_id=f"c{c}",
                    feature="api_calls",
                    quantity=Decimal(10**9),
                    starts_at=now - timedelta(days=1),
                    ends_at=now + timedelta(days=30),
                ),
                now,
            )
        rt.resolution.refresh([(prefix, f"c{c}", "api_calls") for c in range(args.customers)], now)
        rng = random.Random(7)
        drawn = [rng.randrange(args.customers) for _ in range(args.events)]
        events = [
            usage_event(
                org=prefix,
                customer=f"c{drawn[i]}",
                feature="api_calls",
                quantity="1",
                event_id=f"e{i}",
                source="bench",
            )
            for i in range(args.events)
        ]
        env = {
            **os.environ,
            "METERD_DATABASE_URL": db,
            "METERD_REDIS_URL": args.redis_url,
            "METERD_BROKER_URL": args.broker_url,
            "METERD_BROKER_KEY_PREFIX": settings.broker_key_prefix,
            "METERD_REDIS_PREFIX": prefix,
            "METERD_UNSAFE_REDIS": "1",  # the bench's Redis has no persistence
        }
        worker = subprocess.Popen(
            worker_command((INGEST_QUEUE,), args.concurrency),
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        app = create_app(settings)
        stats_key = rt.redis_keys.stats("events")

        def accepted() -> int:
            return int(rt.redis.hget(stats_key, "accepted") or 0)

        def counted() -> int:
            pipe = rt.redis.pipeline(transaction=False)
            for c in range(args.customers):
                pipe.hvals(rt.redis_keys.used(prefix, f"c{c}"))
            return sum(int(v) for values in pipe.execute() for v in values) // 10**6

        try:
            warm = [dict(e, id=f"warm-{i}") for i, e in enumerate(events[: args.concurrency * 4])]
            publish_batches(app, warm, 1)
            deadline = time.monotonic() + 60
            while accepted() < len(warm):
                if time.monotonic() > deadline:
                    raise RuntimeError("worker did not start")
                time.sleep(0.05)
            target = len(warm) + len(events)
            usec0, cpu0 = evalsha_usec(rt.redis), group_cpu_seconds(worker.pid)
            server0 = process_cpu_seconds(args.redis_pid)
            pool0 = group_cpu_seconds(worker.pid, leader=False)
            start = time.perf_counter()
            publish_batches(app, events, args.batch_size)
            while accepted() < target:
                time.sleep(0.005)
            while counted() < target:
                time.sleep(0.005)
            elapsed = time.perf_counter() - start
            usec1, cpu1 = evalsha_usec(rt.redis), group_cpu_seconds(worker.pid)
            server1 = process_cpu_seconds(args.redis_pid)
            pool1 = group_cpu_seconds(worker.pid, leader=False)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
            app.close()
            rt.close()
    n = len(events)
    print(
        json.dumps(
            {
                "events_per_s": n / elapsed,
                "redis_us": (usec1 - usec0) / n,
                "redis_cpu_us": (server1 - server0) * 1e6 / n,
                "worker_us": (cpu1 - cpu0) * 1e6 / n,
                "pool_us": (pool1 - pool0) * 1e6 / n,
            }
        )
    )


def run_one(
    src: Path, args: argparse.Namespace, redis_url: str, broker_url: str, redis_pid: int
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{HERE}"}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child",
         "--redis-url", redis_url, "--broker-url", broker_url, "--redis-pid", str(redis_pid),
         "--events", str(args.events), "--customers", str(args.customers),
         "--batch-size", str(args.batch_size), "--concurrency", str(args.concurrency)],
        env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"run under {src} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--broker-url", help=argparse.SUPPRESS)
    parser.add_argument("--redis-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    sys.path.insert(0, str(REPO))
    from tests.e2e.old_code import OLD_COMMIT, materialise

    from meterd.testing import PrivateRedis

    with tempfile.TemporaryDirectory() as tmp, PrivateRedis() as counters, PrivateRedis() as broker:
        trees = {"today": REPO / "src", OLD_COMMIT: materialise(Path(tmp) / "old")}
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for round_no in range(args.rounds):
            order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
            for name in order:
                for url in (counters.url, broker.url):
                    redis.Redis.from_url(url).flushall()
                assert counters.proc is not None
                result = run_one(trees[name], args, counters.url, broker.url, counters.proc.pid)
                results[name].append(result)
                print(
                    f"round {round_no + 1} {name}: {result['events_per_s']:,.0f} events/s, "
                    f"redis {result['redis_us']:.1f} us/event "
                    f"(server CPU {result['redis_cpu_us']:.1f}), "
                    f"worker {result['worker_us']:.1f} us/event "
                    f"(pool children {result['pool_us']:.1f})",
                    file=sys.stderr,
                )
    med = {
        name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for name, runs in results.items()
    }
    today, old = med["today"], med[OLD_COMMIT]
    print()
    print(
        f"meterd row, {args.events:,} events, {args.customers:,} customers, batches of "
        f"{args.batch_size}, -c {args.concurrency}; medians of {args.rounds} rounds"
    )
    print(f"(b6213b7: git archive {OLD_COMMIT} into a temp dir, run with PYTHONPATH=<it>/src)")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print()
    print(f"| | today | {OLD_COMMIT} | today / {OLD_COMMIT} |")
    print("|---|---:|---:|---:|")
    for key, label, fmt in (
        ("events_per_s", "events/s", "{:,.0f}"),
        ("redis_us", "redis us/event", "{:.1f}"),
        ("redis_cpu_us", "redis-server CPU us/event", "{:.1f}"),
        ("worker_us", "worker us/event", "{:.1f}"),
        ("pool_us", "of it the pool children", "{:.1f}"),
    ):
        ratio = today[key] / old[key] if old[key] else float("nan")
        print(f"| {label} | {fmt.format(today[key])} | {fmt.format(old[key])} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
