"""Worker CPU of redis-py packing one ingest call: add_batch's KEYS/ARGV as they are
(11 strings an event) beside one ARGV an event with each customer's keys once
(run.py's ``packed``). Same batches as run.py (fresh state), no Redis time.

    cd <worktree> && PYTHONPATH=$PWD/src:$PWD/bench nice -n 10 \\
        /work/main/.venv/bin/python bench/prof25/pack_cost.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from compare import unpacked
from run import packed
from setup_state import build, events_in, scratch_dir

from memory import private_redis, system_redis_server


def main() -> None:
    with private_redis(system_redis_server()) as client, scratch_dir() as tmp:
        state = build(client, tmp, events=20_000, customers=1000, batch=500, steady=False)
        conn = client.connection_pool.get_connection()
        n = sum(events_in(b.args) for b in state.batches)
        nine = [unpacked(b) for b in state.batches]  # add_batch packs now: the old shape
        shapes = {"nine ARGV an event, two keys (before)": nine}
        shapes["one ARGV an event, keys once (tab-joined)"] = [packed(b) for b in nine]
        shapes["as add_batch sends it"] = state.batches
        for label, batches in shapes.items():
            best = float("inf")
            for _ in range(5):
                cpu = time.process_time()
                for b in batches:
                    conn.pack_command("EVALSHA", "0" * 40, len(b.keys), *b.keys, *b.args)
                best = min(best, time.process_time() - cpu)
            print(f"| {label} | {best * 1e6 / n:.2f} us/event |")
        client.connection_pool.release(conn)
        state.rt.close()


if __name__ == "__main__":
    main()
