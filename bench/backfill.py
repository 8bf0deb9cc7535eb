"""Backfill rate beside live ingest's, in one run, on the machine's PostgreSQL and
Redis (a scratch database and key prefix, dropped afterwards; ``scratch.py``).

Both rows run in this one Python process, each through its service, the way
its task runs it (no broker): so the ratio is the cost of the two paths, not of
Celery.

* live:     --live-events usage events timed now, ``IngestService.ingest`` in
            messages of 500 (chunks of METERD_BATCH_SIZE), then the flush
            that writes them to PostgreSQL (the live path is not done before).
* backfill: --events events a year to 40 days old, spread over --customers
            customers with a renewing monthly grant each (started 400 days
            ago: the lifecycle summarised its old terms, so the backfill opens
            their period rows), --duplicates of them sent twice; written to a
            JSON-lines file first, then streamed through ``meterd import``'s
            reader in batches of --batch-size into ``BackfillService.backfill``.

Then it checks the figures: every period's consumption equals the sum of its
events (computed here while writing the file), duplicates counted once, and
prints the peak RSS before and after the backfill (the file is streamed:
memory does not grow with it).

    python bench/backfill.py                    # 1,000,000 events, 1,000 customers
    python bench/backfill.py --events 100000
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from meterd.cli.import_events import read_events
from meterd.core.terms import Term, TermUnit
from meterd.core.timeutil import isoformat, utcnow
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.storage.models import UsagePeriod
from meterd.testing import usage_event
from scratch import scratch_settings

ORG, FEATURE = "bench", "api_calls"


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def grants(rt: Runtime, customers: int, now: datetime) -> None:
    rt.catalog.create_org(ORG, ORG, now)
    rt.catalog.create_feature(ORG, FEATURE, now=now)
    for c in range(customers):
        rt.catalog.create_entitlement(
            NewEntitlement(
                org=ORG, customer_id=f"c{c}", feature=FEATURE, quantity=Decimal(1000),
                renewal_quantity=Decimal(800), starts_at=now - timedelta(days=400),
                auto_renew=True, term=Term.of(1, TermUnit.MONTH),
            ),
            now,
        )  # fmt: skip


def write_history(path: Path, args: argparse.Namespace, now: datetime) -> Decimal:
    """The file of history (JSON lines), with --duplicates ids sent twice; returns the
    sum of the distinct events' quantities."""
    rng = random.Random(7)
    span = (timedelta(days=365) - timedelta(days=40)).total_seconds()
    total = Decimal(0)
    with path.open("w") as out:
        for i in range(args.events):
            quantity = rng.randint(1, 9)
            when = now - timedelta(days=40, seconds=rng.random() * span)
            payload = usage_event(
                org=ORG, customer=f"c{rng.randrange(args.customers)}", feature=FEATURE,
                quantity=str(quantity), event_id=f"h{i}", source="bench", time=isoformat(when),
            )  # fmt: skip
            out.write(json.dumps(payload) + "\n")
            total += quantity
            if i < args.duplicates:  # the same event again, as a resent file would
                out.write(json.dumps(payload) + "\n")
    return total


def live_rate(rt: Runtime, events: int, customers: int) -> float:
    now = utcnow()
    batches = [
        [
            usage_event(
                org=ORG,
                customer=f"c{(b * 500 + i) % customers}",
                feature=FEATURE,
                quantity="1",
                event_id=f"live-{b}-{i}",
                source="bench-live",
                time=isoformat(now),
            )
            for i in range(500)
        ]
        for b in range(events // 500)
    ]
    start = time.perf_counter()
    for batch in batches:
        rt.ingest.ingest(batch, now=now)
    rt.flush.flush_all(utcnow(), max_batches=1000)
    return (len(batches) * 500) / (time.perf_counter() - start)


def backfill_rate(rt: Runtime, path: Path, batch_size: int) -> tuple[float, Counter[str]]:
    backfill_id = rt.backfill.open(ORG, "bench", "cli", utcnow())
    counts: Counter[str] = Counter()
    batch: list[object] = []
    batch_no = 0
    start = time.perf_counter()
    with path.open("rb") as stream:
        for event in read_events(stream):
            batch.append(event)
            if len(batch) == batch_size:
                report = rt.backfill.backfill(
                    batch, org=ORG, backfill_id=backfill_id, batch_no=batch_no, now=utcnow()
                )
                counts.update(report.counts)
                batch, batch_no = [], batch_no + 1
        if batch:
            report = rt.backfill.backfill(
                batch, org=ORG, backfill_id=backfill_id, batch_no=batch_no, now=utcnow()
            )
            counts.update(report.counts)
    rt.flush.flush_all(utcnow(), max_batches=1000)  # what went through the live path
    return sum(counts.values()) / (time.perf_counter() - start), counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--duplicates", type=int, default=10_000)
    parser.add_argument("--live-events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    now = utcnow()
    with scratch_settings("backfill") as settings, tempfile.TemporaryDirectory() as tmp:
        rt = Runtime.from_settings(settings.model_copy(update={"unsafe_redis": True}))
        grants(rt, args.customers, now)
        path = Path(tmp) / "history.jsonl"
        expected = write_history(path, args, now)
        size = path.stat().st_size / 2**20
        live = live_rate(rt, args.live_events, args.customers)
        before = rss_mib()
        rate, counts = backfill_rate(rt, path, args.batch_size)
        after = rss_mib()
        with rt.database.sessions() as s:
            consumed = s.scalar(select(func.sum(UsagePeriod.consumed)))
            periods = s.scalar(select(func.count()).select_from(UsagePeriod))
        exact = Decimal(consumed) - args.live_events // 500 * 500 == expected
        print(f"file: {args.events + args.duplicates:,} lines ({size:.0f} MiB),"
              f" {args.customers:,} customers, {periods:,} period rows after")  # fmt: skip
        print(f"live ingest (in process, + flush): {live:,.0f} events/s")
        print(f"backfill   (in process, streamed): {rate:,.0f} events/s"
              f"  ({rate / live:.2f} of live)")  # fmt: skip
        print(f"outcomes: {dict(counts)}")
        print(f"peak RSS: {before:.0f} MiB before the backfill, {after:.0f} MiB after")
        print(f"every unit counted once: {exact} (expected {expected}, consumed {consumed})")


if __name__ == "__main__":
    main()
