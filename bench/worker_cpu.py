"""The ingest service's Python per event (issue 25, item 2), beside same-run references.

On a private redis-server and the prof25 state (1,000 customers, one SUM feature,
20,000 one-unit usage events in batches of 500, all accepted), each round measures
process CPU time (Redis is another process) of:

* ``service``: ``rt.ingest.ingest`` whole (parsing, meters, the counting service,
  ``add_batch``'s argument building, redis-py's packing);
* ``service, cache off``: the same with the counter store's resolution cache off
  (``storage/resolution_cache.py``: no MGET of entries, no candidate computed), so
  ``service`` less it is what giving ingest.lua the candidates costs the worker
  (the cache warm: entries are fetched again only every few seconds);
* ``service - add_batch``: the same with ``CounterStore.add_batch`` answering without
  building its arguments (every event accepted): parsing, the loop around counting
  and the report, the part this item owns;
* ``parse_event``: the parser alone, and the references beside it: ``full model``
  (the pydantic path every event took before the fast path: ``shape_problem`` then
  the model, as ``parse_event`` did), and ``json.loads`` of the same events (the
  floor of any decoding in Python).

Each figure of a round is the least of 3 runs (the least disturbed on a shared
machine); the table shows medians over the rounds, and ratios of the same round's
figures. To compare with the code before the fast path, run this script with
``PYTHONPATH`` naming that code's ``src`` (e.g. a ``git archive`` of b6213b7 or of
the branch's base), back to back with this one.

    cd <worktree> && PYTHONPATH=$PWD/src:$PWD/bench nice -n 10 \\
        /work/main/.venv/bin/python bench/worker_cpu.py [--rounds 5] [--events 20000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent / "prof25"))
sys.path.insert(0, str(Path(__file__).parent))
from setup_state import State, build, restore, scratch_dir

from memory import private_redis, system_redis_server
from meterd.core.event_parsing import parse_event
from meterd.core.events import InvalidEvent, RawEvent, UsageEvent, parse_event_by_model
from meterd.storage.counters import ScriptCode

BATCH = 500


def full_model(payload: Any, *, received_at: datetime) -> UsageEvent | RawEvent | InvalidEvent:
    """The parse every valid event took before the fast path (b6213b7's
    ``parse_event``): the shape walk, then the pydantic model."""
    return parse_event_by_model(payload, received_at=received_at)


#: Each figure of a round is the least of this many runs: on a shared machine the
#: least is the run least disturbed by other processes.
REPEAT = 3


def cpu_us(n: int, run: Callable[[], object], before: Callable[[], object] = lambda: None) -> float:
    best = float("inf")
    for _ in range(REPEAT):
        before()
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best * 1e6 / n


def ingest_all(state: State) -> None:
    for i in range(0, len(state.raw), BATCH):
        batch = state.raw[i : i + BATCH]
        report = state.rt.ingest.ingest(batch, now=state.now)
        if report.counts.get("accepted", 0) != len(batch):
            raise RuntimeError(f"not every event accepted: {dict(report.counts)}")


def one_round(state: State, client: Any) -> dict[str, float]:
    n = len(state.raw)
    row: dict[str, float] = {}
    row["service"] = cpu_us(
        n, lambda: ingest_all(state), before=lambda: restore(client, state.snapshot)
    )

    store = state.rt.counters
    cache = store.resolution_cache
    store.resolution_cache = None
    try:
        row["service, cache off"] = cpu_us(
            n, lambda: ingest_all(state), before=lambda: restore(client, state.snapshot)
        )
    finally:
        store.resolution_cache = cache

    real = store.add_batch
    store.add_batch = lambda events, **_: [ScriptCode.ACCEPTED] * len(events)  # type: ignore[method-assign]
    try:
        row["service - add_batch"] = cpu_us(n, lambda: ingest_all(state))
    finally:
        store.add_batch = real  # type: ignore[method-assign]

    now = state.now
    row["parse_event"] = cpu_us(n, lambda: [parse_event(r, received_at=now) for r in state.raw])
    row["full model"] = cpu_us(n, lambda: [full_model(r, received_at=now) for r in state.raw])
    texts = [json.dumps(state.raw[i : i + BATCH]) for i in range(0, n, BATCH)]
    row["json.loads"] = cpu_us(n, lambda: [json.loads(t) for t in texts])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=20_000)
    opts = parser.parse_args()
    with private_redis(system_redis_server()) as client, scratch_dir() as tmp:
        state = build(client, tmp, events=opts.events, customers=1000, batch=BATCH, steady=False)
        ingest_all(state)  # warm: meters read, code paths taken
        parsed = [parse_event(r, received_at=state.now) for r in state.raw]
        assert parsed == [full_model(r, received_at=state.now) for r in state.raw]
        rows = [one_round(state, client) for _ in range(opts.rounds)]
        state.rt.close()
    print(f"{opts.events} usage events, batches of {BATCH}, {opts.rounds} rounds (median, min-max)")
    print("| figure | CPU us/event | range |")
    print("|---|---:|---:|")
    for name in rows[0]:
        values = [r[name] for r in rows]
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} | {min(values):.2f}-{max(values):.2f} |")
    ratios = {
        "service / service, cache off": ("service", "service, cache off"),
        "parse_event / full model": ("parse_event", "full model"),
        "parse_event / json.loads": ("parse_event", "json.loads"),
        "service - add_batch / json.loads": ("service - add_batch", "json.loads"),
        "service - add_batch / full model": ("service - add_batch", "full model"),
    }
    print("\n| same-run ratio | median | range |")
    print("|---|---:|---:|")
    for label, (a, b) in ratios.items():
        values = [r[a] / r[b] for r in rows]
        med = statistics.median(values)
        print(f"| {label} | {med:.2f} | {min(values):.2f}-{max(values):.2f} |")


if __name__ == "__main__":
    main()
