"""Corrections: what a void costs when its period must be recounted (MAX, LATEST,
UNIQUE_COUNT) beside a SUM void in a period of the same size (taken back by
difference: the reference, measured in the same run), on a private redis-server
(no persistence; killed at the end) and a temporary SQLite database.

For each period size N: one customer's period holds N flushed samples (and 500 more
still waiting for the flush, so the recount reads both); the bench voids the
sample that sets the figure (MAX: the largest; LATEST: the latest; UNIQUE_COUNT: a
value seen once), --voids times, and prints the median milliseconds per void, the
ratio to the SUM void, the recount's rate (items read per second) and the peak
Python memory one more void allocated (tracemalloc, not timed: the log is
streamed and folded, so it stays flat as N grows).

    python bench/corrections.py                 # N = 1,000, 10,000 and 100,000
    python bench/corrections.py --quick         # N = 1,000 and 10,000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from memory import make_runtime, private_redis, system_redis_server
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.storage.migrate import upgrade

ORG = "bench"
WAITING = 500


def sample(feature: str, n: int, value: int, now: datetime, customer: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{feature}-{n}",
        "source": "bench",
        "type": "meterd.usage",
        "subject": customer,
        "org": ORG,
        "time": (now - timedelta(seconds=n % 3600, microseconds=n)).isoformat(),
        "data": {"feature": feature, "quantity": str(value), "user": f"u{value}"},
    }


def fill(rt: Runtime, feature: str, size: int, now: datetime, customer: str) -> None:
    """``size`` flushed samples and WAITING waiting ones; sample 0 sets the figure."""
    total = size + WAITING
    for start in range(0, total, 5000):
        batch = []
        for n in range(start, min(total, start + 5000)):
            # MAX: sample 0 is the largest; LATEST: the latest (n % 3600 == 0, n == 0);
            # UNIQUE_COUNT: its value u<size * 10> is seen once
            value = size * 10 if n == 0 else 1 + n % 1000
            batch.append(sample(feature, n, value, now, customer))
        rt.ingest.ingest(batch, now=now)
        if start + 5000 <= size:
            rt.flush.flush_all(now, max_batches=100)


def timed_voids(rt: Runtime, feature: str, voids: int, now: datetime) -> tuple[float, int]:
    """Median ms per void of sample 0 (voided, then re-sent under a new id each round
    so the next void finds the same figure to recount), and peak bytes allocated."""
    times = []
    peak = 0
    for k in range(voids + 1):  # the last one under tracemalloc (it slows Python down)
        event_id = f"{feature}-0" if k == 0 else f"{feature}-0-again-{k}"
        if k:
            again = sample(feature, 0, 0, now, f"c-{feature}")
            again["id"] = event_id
            value = "1" if feature.startswith("sum") else str(10**9)
            again["data"] = {**again["data"], "quantity": value, "user": "u-again"}
            rt.ingest.ingest([again], now=now)
        if k == voids:
            tracemalloc.start()
            rt.corrections.void(ORG, "bench", event_id, reason="bench", actor="cli", now=now)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            continue
        started = time.perf_counter()
        rt.corrections.void(ORG, "bench", event_id, reason="bench", actor="cli", now=now)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--voids", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.sizes = [1_000, 10_000]

    with tempfile.TemporaryDirectory() as tmp, private_redis(system_redis_server()) as client:
        db_url = f"sqlite:///{Path(tmp) / 'corrections.db'}"
        upgrade(db_url)
        rt = make_runtime(client, db_url, "cb", timedelta(hours=24))
        now = utcnow()
        rt.catalog.create_org(ORG, ORG, now)
        print(f"corrections: a void's cost by period size ({WAITING} samples waiting)")
        print("| period size | SUM void (reference) | MAX | LATEST | UNIQUE_COUNT |")
        print("|---:|---:|---:|---:|---:|")
        for size in args.sizes:
            row = {}
            for agg in ("SUM", "MAX", "LATEST", "UNIQUE_COUNT"):
                feature = f"{agg.lower()}{size}"
                extra: dict[str, Any] = {"value_property": "user"} if agg == "UNIQUE_COUNT" else {}
                rt.catalog.create_feature(
                    ORG, feature, now=now - timedelta(days=2), scale=0, aggregation=agg, **extra
                )
                rt.catalog.create_entitlement(
                    NewEntitlement(
                        org=ORG,
                        customer_id=f"c-{feature}",
                        feature=feature,
                        quantity=Decimal(10**12),
                        starts_at=now - timedelta(days=1),
                        ends_at=now + timedelta(days=10),
                    ),
                    now,
                )
                fill(rt, feature, size, now, f"c-{feature}")
                row[agg] = timed_voids(rt, feature, args.voids, now)
            ref = row["SUM"][0]
            cells = [f"{row['SUM'][0]:.1f} ms"]
            for agg in ("MAX", "LATEST", "UNIQUE_COUNT"):
                ms, peak = row[agg]
                rate = (size + WAITING) / (ms / 1000)
                mib = peak / 2**20
                ratio = ms / ref
                cells.append(f"{ms:.1f} ms ({ratio:.0f}x; {rate:,.0f} items/s; peak {mib:.1f} MiB)")
            print(f"| {size:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
