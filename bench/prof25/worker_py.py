"""The worker's Python per event on the profile's batches (issue 25): CPU time of
``rt.ingest.ingest`` (validation, meters, the counting service, argument packing,
redis-py; Redis's own time is another process's), then the same under cProfile
for where it goes. Same private redis-server and state as run.py (fresh).

    cd <worktree> && PYTHONPATH=$PWD/src:$PWD/bench nice -n 10 \\
        /work/main/.venv/bin/python bench/prof25/worker_py.py
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from setup_state import State, build, events_in, restore, scratch_dir

from memory import private_redis, system_redis_server
from meterd.core.event_parsing import parse_event


def ingest_all(state: State, batch: int) -> None:
    for i in range(0, len(state.raw), batch):
        report = state.rt.ingest.ingest(state.raw[i : i + batch], now=state.now)
        if report.counts.get("accepted", 0) != len(state.raw[i : i + batch]):
            raise RuntimeError(f"not every event accepted: {dict(report.counts)}")


def main() -> None:
    batch = 500
    with private_redis(system_redis_server()) as client, scratch_dir() as tmp:
        state = build(client, tmp, events=20_000, customers=1000, batch=batch, steady=False)
        n = len(state.raw)
        rows = []
        for label in ("run 1", "run 2", "run 3"):
            restore(client, state.snapshot)
            client.config_resetstat()
            cpu, wall = time.process_time(), time.perf_counter()
            ingest_all(state, batch)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            redis_us = float(client.info("commandstats")["cmdstat_evalsha"]["usec"]) / n
            rows.append((label, cpu * 1e6 / n, wall * 1e6 / n, redis_us))
        # the parts alone
        cpu = time.process_time()
        for raw in state.raw:
            parse_event(raw, received_at=state.now)
        parse_us = (time.process_time() - cpu) * 1e6 / n
        restore(client, state.snapshot)
        store = state.rt.counters
        real = store._ingest
        store._ingest = lambda *, keys, args: b"a" * events_in(args)  # type: ignore[assignment]
        evs = [parse_event(r, received_at=state.now) for r in state.raw]
        cpu = time.process_time()
        for i in range(0, n, batch):
            store.add_batch(evs[i : i + batch], now=state.now)  # type: ignore[arg-type]
        pack_us = (time.process_time() - cpu) * 1e6 / n
        store._ingest = real
        restore(client, state.snapshot)
        prof = cProfile.Profile()
        prof.enable()
        ingest_all(state, batch)
        prof.disable()
        state.rt.close()
    print("| run | worker CPU us/event | wall us/event | Redis EVALSHA us/event |")
    print("|---|---:|---:|---:|")
    for label, c, w, r in rows:
        print(f"| {label} | {c:.2f} | {w:.2f} | {r:.2f} |")
    print(f"\nparse_event alone: {parse_us:.2f} us/event")
    print(f"add_batch's argument building alone (no Redis): {pack_us:.2f} us/event")
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
    print(out.getvalue())


if __name__ == "__main__":
    main()
