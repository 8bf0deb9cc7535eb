"""Lifecycle job throughput on PostgreSQL: 1,000,000 entitlements, N of them due.

Creates a scratch database on the machine's PostgreSQL (dropped afterwards),
fills it with --rows entitlements of which --due have just ended, and times
`LifecycleService.advance_all` (claiming due rows, moving them, audit and
notification rows, resolution refresh in Redis db 11) applying them; then
makes --small-due of them due again and times that, to show the work follows
what is due, not the table size.

    python bench/lifecycle.py                       # 1M rows, 100k due, then 10k
    python bench/lifecycle.py --jobs 2              # two jobs at once share the work
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from scratch import scratch_settings

FILL = """
INSERT INTO entitlements (id, org_id, number, customer_id, feature_id, quantity, billing_type,
    contract_mode, status, priority, starts_at, ends_at, grace_until, issued_at, auto_renew,
    row_version, created_at, updated_at)
SELECT gen_random_uuid(), 'bench', g, 'c' || g, :feature_id, 100, 'PRE_PAID', 'PRODUCTION',
    'ACTIVE', 0, :now - interval '10 days',
    CASE WHEN g <= :due THEN :now - interval '1 minute' ELSE :now + interval '10 days' END,
    NULL, :now, false, 1, :now, :now
FROM generate_series(1, :rows) AS g
"""

MAKE_DUE_AGAIN = """
UPDATE entitlements SET status = 'ACTIVE', ends_at = :now - interval '30 seconds',
    row_version = row_version + 1
WHERE org_id = 'bench' AND number <= :due
"""


def timed_advance(rt: Runtime, batch_size: int, jobs: int = 1) -> tuple[float, int]:
    """Wall time of ``jobs`` lifecycle jobs running at once until nothing is due (as
    that many workers on the meterd.lifecycle queue would), and the transitions applied."""
    now = utcnow()
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        reports = list(
            pool.map(lambda _: rt.lifecycle.advance_all(now, batch_size=batch_size), range(jobs))
        )
    return time.perf_counter() - start, sum(r.transitions for r in reports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=100_000)
    parser.add_argument("--small-due", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--jobs", type=int, default=1, help="lifecycle jobs running at once")
    args = parser.parse_args()

    with scratch_settings("lc") as settings:
        rt = Runtime.from_settings(settings)
        now = utcnow()
        rt.catalog.create_org("bench", "bench", now)
        feature = rt.catalog.create_feature("bench", "api_calls", now=now)
        start = time.perf_counter()
        with rt.database.engine.begin() as conn:
            params = {"feature_id": feature.id, "now": now, "due": args.due, "rows": args.rows}
            conn.execute(sa.text(FILL), params)
            conn.execute(sa.text("ANALYZE entitlements"))
        print(f"filled {args.rows:,} entitlements in {time.perf_counter() - start:.1f}s")

        big_s, big_n = timed_advance(rt, args.batch_size, args.jobs)
        with rt.database.engine.begin() as conn:
            conn.execute(sa.text(MAKE_DUE_AGAIN), {"now": utcnow(), "due": args.small_due})
        small_s, small_n = timed_advance(rt, args.batch_size, args.jobs)

        print()
        print("| entitlements | due | jobs at once | transitions | seconds | transitions/s |")
        print("|---:|---:|---:|---:|---:|---:|")
        for due, n, s in ((args.due, big_n, big_s), (args.small_due, small_n, small_s)):
            print(f"| {args.rows:,} | {due:,} | {args.jobs} | {n:,} | {s:.2f} | {n / s:,.0f} |")
        print(f"\n{args.due:,} due / {args.small_due:,} due: time ratio {big_s / small_s:.1f}x")
        rt.close()


if __name__ == "__main__":
    main()
