"""Rollover: what counting on a grant that rolls over costs beside the same grant
without rollover (the reference, measured in the same run), on a private
redis-server (no persistence; killed at the end) and a temporary SQLite database.

Each customer has one monthly PRE_PAID grant that began --terms months ago and
renewed every month since. With rollover, the current term's limit is walked back
to the first term from the consumptions (the worst case: the late window is long
enough that no carry is final yet, so the lifecycle job has stored none), once per
batch and entry (``lua/ingest/rollover.lua``'s ``walk_shape``), then folded per
event. The bench ingests --events events (batches of 100, customers drawn
round-robin) into the current term, and prints events per second of each and the
ratio; and Redis's MEMORY USAGE of a resolution entry with and without rollover
(bytes per entitlement: what ``"o"`` and the extra periods kept back to a final
term cost).

    python bench/rollover.py                 # 24 terms, 200 customers, 20,000 events
    python bench/rollover.py --quick         # 5,000 events
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from memory import make_runtime, private_redis, system_redis_server
from meterd.core.terms import Term
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.storage.migrate import upgrade

ORG = "bench"
BATCH = 100


def grant(rt: Runtime, customer: str, terms: int, rollover: bool) -> None:
    now = utcnow()
    starts = (now - timedelta(days=31 * terms)).replace(hour=0, minute=0, second=0, microsecond=0)
    rt.catalog.create_entitlement(
        NewEntitlement(
            org=ORG,
            customer_id=customer,
            feature="calls",
            quantity=Decimal(1_000_000),
            renewal_quantity=Decimal(1_000_000),
            starts_at=starts,
            auto_renew=True,
            term=Term(months=1),
            rollover_max=Decimal(500_000) if rollover else None,
        ),
        now,
    )


def event(customer: str, n: int, at: str) -> dict[str, Any]:
    return {
        "specversion": "1.0", "id": f"{customer}-{n}", "source": "bench",
        "type": "meterd.usage", "subject": customer, "org": ORG, "time": at,
        "data": {"feature": "calls", "quantity": "1"},
    }  # fmt: skip


def ingest_rate(rt: Runtime, customers: list[str], events: int, run: int) -> float:
    now = utcnow()
    at = (now - timedelta(seconds=5)).isoformat()
    batches = [
        [
            event(customers[(b * BATCH + i) % len(customers)], run * events + b * BATCH + i, at)
            for i in range(BATCH)
        ]
        for b in range(events // BATCH)
    ]
    rt.ingest.ingest(batches[0], now=now)  # the resolution entries loaded, scripts cached
    start = time.perf_counter()
    for batch in batches[1:]:
        report = rt.ingest.ingest(batch, now=now)
        if report.counts.get("accepted", 0) != len(batch):
            raise RuntimeError(f"expected every event accepted, got {dict(report.counts)}")
    return (len(batches) - 1) * BATCH / (time.perf_counter() - start)


def entry_bytes(rt: Runtime, customer: str) -> int:
    key = rt.redis_keys.resolution(ORG, customer, "calls")
    return int(rt.redis.memory_usage(key, samples=0) or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--terms", type=int, default=24)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    events = 5_000 if args.quick else args.events
    with tempfile.TemporaryDirectory() as tmp, private_redis(system_redis_server()) as client:
        db_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(db_url)
        rt = make_runtime(client, db_url, "rb", timedelta(hours=1))
        rt = Runtime(
            settings=rt.settings.model_copy(update={"late_window": 3 * 366 * 86400}),
            redis=rt.redis,
            database=rt.database,
        )
        rt.catalog.create_org(ORG, "Bench", utcnow())
        rt.catalog.create_feature(ORG, "calls", now=utcnow())
        plain = [f"plain-{i}" for i in range(args.customers)]
        rolling = [f"roll-{i}" for i in range(args.customers)]
        for c in plain:
            grant(rt, c, args.terms, rollover=False)
        for c in rolling:
            grant(rt, c, args.terms, rollover=True)
        rates = {}
        # alternate, twice each, so a shared machine's drift hits both alike
        for run, (name, customers) in enumerate([("plain", plain), ("rollover", rolling)] * 2):
            rate = ingest_rate(rt, customers, events, run)
            rates[name] = max(rates.get(name, 0.0), rate)
        plain_bytes, rolling_bytes = entry_bytes(rt, plain[0]), entry_bytes(rt, rolling[0])
        # The steady state: the default late window (35 days), the lifecycle job run,
        # so every carry but the last term's is final and stored: the walk is short.
        steady = make_runtime(client, db_url, "rb", timedelta(hours=1))
        report = steady.lifecycle.advance_all(utcnow())
        steady.resolution.refresh([(ORG, c, "calls") for c in plain + rolling], utcnow())
        for run, (name, customers) in enumerate(
            [("plain final", plain), ("rollover final", rolling)] * 2, start=4
        ):
            rate = ingest_rate(steady, customers, events, run)
            rates[name] = max(rates.get(name, 0.0), rate)
        plain_final, rolling_final = entry_bytes(steady, plain[0]), entry_bytes(steady, rolling[0])
    print(f"rollover bench: {args.terms} monthly terms, {args.customers} customers each,"
          f" {events:,} events in batches of {BATCH} (best of two runs each)")  # fmt: skip
    print(f"  without rollover (reference): {rates['plain']:>9,.0f} events/s")
    print(
        f"  with rollover, no carry final: {rates['rollover']:>8,.0f} events/s"
        f"  ({rates['rollover'] / rates['plain']:.2f}x the reference)"
    )
    print(
        f"  resolution entry: {plain_bytes:,} B without rollover, {rolling_bytes:,} B with"
        " (both hold every term: the late window reaches back past them all)"
    )
    print(
        f"steady state: the default late window, the lifecycle job run"
        f" ({report.carries_finalised:,} carries made final)"
    )
    print(f"  without rollover (reference): {rates['plain final']:>9,.0f} events/s")
    print(
        f"  with rollover, carries final: {rates['rollover final']:>9,.0f} events/s"
        f"  ({rates['rollover final'] / rates['plain final']:.2f}x the reference)"
    )
    print(
        f"  resolution entry: {plain_final:,} B without rollover, {rolling_final:,} B with"
        f' ({rolling_final - plain_final:+,} B per entitlement: "o" and the term before)'
    )


if __name__ == "__main__":
    main()
