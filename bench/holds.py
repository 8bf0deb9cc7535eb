"""Holds: their Redis memory, and the cost of a hold + settle beside a reserve, in one
run on a private redis-server (no persistence; killed at the end) and a temporary
SQLite database.

a. bytes per live hold: --holds holds (1 unit each) spread over --customers
   customers, through ``HoldService.hold``; the growth of ``used_memory`` divided
   by the holds. The reference, on the same server in the same run: a plain
   reservation (``reserve``), which keeps a dedupe marker and a waiting record
   until the flush.
b. the bound: a hold's record is kept until an hour after it ends (settled,
   released or expired), so at a sustained --rate holds/s of --hold-seconds each,
   at most about rate x (hold seconds + 1 hour) records exist; live holds per
   customer are capped at 10,000.
c. in process, no HTTP: holds + settles per second and reserves per second, each
   over the same number of calls (the reference: a reserve is one script call, a
   hold + settle two).

    python bench/holds.py            # 20,000 holds over 1,000 customers
    python bench/holds.py --quick
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from memory import make_runtime, private_redis, system_redis_server, used_memory
from meterd.core.timeutil import utcnow
from meterd.services.catalog import NewEntitlement
from meterd.services.reserve import Reservation
from meterd.storage.migrate import upgrade

ORG = "bench"
FEATURE = "tokens"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--holds", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=100.0, help="holds/s, for the bound (b)")
    parser.add_argument("--hold-seconds", type=int, default=120)
    parser.add_argument("--quick", action="store_true", help="2,000 holds, 100 customers")
    args = parser.parse_args()
    if args.quick:
        args.holds, args.customers = 2_000, 100

    with tempfile.TemporaryDirectory() as tmp, private_redis(system_redis_server()) as client:
        db_url = f"sqlite:///{Path(tmp) / 'holds.db'}"
        upgrade(db_url)
        rt = make_runtime(client, db_url, "hb", timedelta(hours=24))
        now = utcnow()
        rt.catalog.create_org(ORG, ORG, now)
        rt.catalog.create_feature(ORG, FEATURE, now=now, scale=0)
        for c in range(args.customers):
            rt.catalog.create_entitlement(
                NewEntitlement(
                    org=ORG,
                    customer_id=f"c{c}",
                    feature=FEATURE,
                    quantity=Decimal(10**9),
                    starts_at=now,
                    ends_at=None,
                ),
                now,
            )
        # warm every customer's resolution data and totals: measured is the holds
        for c in range(args.customers):
            rt.balance.value(ORG, f"c{c}", FEATURE, now)
        per_customer = args.holds // args.customers

        def request(c: int, key: str) -> Reservation:
            return Reservation(ORG, f"c{c}", FEATURE, Decimal(1), key)

        before, _ = used_memory(client)
        started = time.perf_counter()
        made = []
        for i in range(per_customer):
            for c in range(args.customers):
                result = rt.holds.hold(request(c, f"h{i}"), args.hold_seconds, now)
                assert result.hold is not None
                made.append(result.hold.id)
        hold_seconds = time.perf_counter() - started
        after, _ = used_memory(client)
        per_hold = (after - before) / len(made)

        started = time.perf_counter()
        for hold_id in made:
            rt.holds.settle(ORG, hold_id, Decimal(1), now)
        settle_seconds = time.perf_counter() - started

        before_r, _ = used_memory(client)
        started = time.perf_counter()
        n_reserves = 0
        for i in range(per_customer):
            for c in range(args.customers):
                rt.reserve.reserve(request(c, f"r{i}"), now)
                n_reserves += 1
        reserve_seconds = time.perf_counter() - started
        after_r, _ = used_memory(client)
        per_reserve = (after_r - before_r) / n_reserves

        live = args.rate * (args.hold_seconds + 3_600)
        print(f"\nholds: {len(made):,} over {args.customers:,} customers,", end=" ")
        print(f"{args.hold_seconds} s each\n")
        print("| what | B/each (used_memory growth) |")
        print("|---|---:|")
        print(f"| a live hold (record, sorted-set entry, held total) | {per_hold:,.0f} |")
        print(f"| a reservation (the reference: marker + waiting record) | {per_reserve:,.0f} |")
        print(f"\nratio hold / reservation: {per_hold / per_reserve:.2f}")
        print(
            f"\n(b) bound at {args.rate:,.0f} holds/s of {args.hold_seconds} s: about"
            f" {live:,.0f} records kept (hold seconds + 1 hour), {live * per_hold / 2**20:,.0f} MiB"
        )
        print("\n(c) in process, no HTTP:\n")
        print("| call | per second | ratio to reserve |")
        print("|---|---:|---:|")
        reserve_rate = n_reserves / reserve_seconds
        hold_rate = len(made) / hold_seconds
        pair_rate = len(made) / (hold_seconds + settle_seconds)
        print(f"| reserve (reference) | {reserve_rate:,.0f} | 1.00 |")
        print(f"| hold | {hold_rate:,.0f} | {hold_rate / reserve_rate:.2f} |")
        print(f"| hold + settle (pairs) | {pair_rate:,.0f} | {pair_rate / reserve_rate:.2f} |")
        rt.close()


if __name__ == "__main__":
    main()
