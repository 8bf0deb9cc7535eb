"""Worker CPU of ``CounterStore.add_batch`` up to the wire: its KEYS/ARGV building
plus redis-py's ``pack_command`` of the EVALSHA, for a base revision's add_batch
beside this tree's, same run, same events (no Redis: the script call is replaced by
the packing). Rounds alternate the two; each figure is the median of the rounds'
process CPU per event, beside the same-run ratio this/base.

    cd <worktree> && PYTHONPATH=$PWD/src:$PWD/bench nice -n 10 \\
        /work/main/.venv/bin/python bench/prof25/pack_add_batch.py --base 3033001
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from redis.connection import Connection

sys.path.insert(0, str(Path(__file__).resolve().parent))
from setup_state import make_events

from meterd.core.redis_keys import RedisKeys
from meterd.core.timeutil import utcnow
from meterd.storage import counters

ROOT = Path(__file__).resolve().parent.parent.parent


def base_module(rev: str) -> types.ModuleType:
    """The base revision's storage/counters.py, loaded beside this tree's."""
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:src/meterd/storage/counters.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("base_counters")
    module.__dict__["__name__"] = "base_counters"
    sys.modules["base_counters"] = module  # dataclasses look their module up
    exec(compile(text, f"{rev}:counters.py", "exec"), module.__dict__)
    return module


def store(module: Any, conn: Connection, sink: list[int]) -> Any:
    s = module.CounterStore(
        redis.Redis(),
        RedisKeys("bench"),
        hot_window=timedelta(days=2),
        late_window=timedelta(days=3),
    )

    def packing(*, keys: list[str], args: list[Any]) -> bytes:
        packed = conn.pack_command("EVALSHA", "0" * 40, len(keys), *keys, *args)
        sink.append(sum(len(chunk) for chunk in packed))
        if "ResolutionCache" in module.__dict__:  # the worker gives candidates (counted)
            return b"a" * (len(args) - 11)
        return b"a" * (
            len(args) - 9 if "EVENT_FIELD_SEPARATOR" in module.__dict__ else (len(keys) - 9) // 2
        )

    s._ingest = packing
    # no Redis here: the packing alone, without the cache (its MGET needs a server)
    if getattr(s, "resolution_cache", None) is not None:
        s.resolution_cache = None
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="3033001")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    now = utcnow()
    events = make_events(args.events, args.customers, now - timedelta(minutes=1), "p")
    batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
    conn = Connection()
    sizes: dict[str, list[int]] = {"base": [], "this": []}
    stores = {
        "base": store(base_module(args.base), conn, sizes["base"]),
        "this": store(counters, conn, sizes["this"]),
    }
    figures: dict[str, list[float]] = {"base": [], "this": []}
    ratios = []
    for _ in range(args.rounds):
        got = {}
        for name, s in stores.items():
            cpu = time.process_time()
            for b in batches:
                s.add_batch(b, now=now)
            got[name] = (time.process_time() - cpu) * 1e6 / len(events)
            figures[name].append(got[name])
        ratios.append(got["this"] / got["base"])
    base = statistics.median(figures["base"])
    this = statistics.median(figures["this"])
    wire = {name: sum(v) / len(v) / args.batch for name, v in sizes.items()}
    print(
        f"add_batch + pack_command: base {args.base} {base:.2f} us/event, this tree "
        f"{this:.2f} us/event, same-run ratio this/base {statistics.median(ratios):.3f} "
        f"(medians of {args.rounds} rounds; {args.events} events, {args.customers} customers, "
        f"batches of {args.batch}; bytes on the wire an event: base {wire['base']:.0f}, "
        f"this {wire['this']:.0f})"
    )


if __name__ == "__main__":
    main()
