"""Where the ingest script's Redis time goes (issue 25): research, not a benchmark of
record. On a private redis-server (never the shared one), from one saved state,
every variant of ``ingest.lua`` (variants.py) counts the same batches; Redis's own
``INFO commandstats`` gives its time per event, beside the unmodified script in the
same round. Rounds interleave the variants, so a noisy neighbour hits them alike.

    cd <worktree> && PYTHONPATH=$PWD/src:$PWD/bench nice -n 10 \\
        /work/main/.venv/bin/python bench/prof25/run.py --rounds 3 [--steady]

``--steady``: the past hot window's marker generations hold markers (a day's
traffic), as in production, so every event pays the lookups in all of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

import redis

sys.path.insert(0, str(Path(__file__).parent))
from compare import unpacked
from setup_state import Batch, State, build, restore, scratch_dir
from variants import Variant, variants

from memory import private_redis, system_redis_server

TO_MSGPACK = """
for _, key in ipairs(KEYS) do
  local raw = redis.call("GET", key)
  if raw then
    local ttl = redis.call("PTTL", key)
    redis.call("SET", key, cmsgpack.pack(cjson.decode(raw)))
    if ttl > 0 then redis.call("PEXPIRE", key, ttl) end
  end
end
return 1
"""


TO_FLAT = """
for _, key in ipairs(KEYS) do
  local raw = redis.call("GET", key)
  if raw then
    local ttl = redis.call("PTTL", key)
    local e = cjson.decode(raw)[1]
    local parts = { "F" }
    for _, p in ipairs(e.p) do
      parts[#parts + 1] = string.format("%d\\t%d\\t%d\\t%s\\n", p[1], p[2], p[3], p[4])
    end
    redis.call("SET", key, table.concat(parts))
    if ttl > 0 then redis.call("PEXPIRE", key, ttl) end
  end
end
return 1
"""


def packed(batch: Batch) -> Batch:
    """One ARGV an event (its fields joined by tabs, with the index of its keys) and
    each distinct key once: the shape a leaner call could take."""
    if len(batch.args) > 9:
        batch = unpacked(batch)  # captured from an add_batch that packs already
    keys = batch.keys[:9]
    index: dict[str, int] = {}
    args = list(batch.args[:9])
    n = (len(batch.keys) - 9) // 2
    for i in range(1, n + 1):
        pair = []
        for key in (batch.keys[2 * i + 7], batch.keys[2 * i + 8]):
            if key not in index:
                keys.append(key)
                index[key] = len(keys)
            pair.append(str(index[key]))
        fields = batch.args[9 * i : 9 * i + 9]
        args.append("\t".join([*pair, *fields]))
    return Batch(keys, args)


def commandstats(client: redis.Redis) -> dict[str, dict[str, float]]:
    raw = cast(dict[str, Any], client.info("commandstats"))
    return {k.removeprefix("cmdstat_"): v for k, v in raw.items()}


def run_variant(client: redis.Redis, state: State, v: Variant) -> dict[str, Any]:
    restore(client, state.snapshot)
    if v.resolution == "msgpack":
        client.eval(TO_MSGPACK, len(state.resolution_keys), *state.resolution_keys)
    if v.resolution == "flat":
        client.eval(TO_FLAT, len(state.resolution_keys), *state.resolution_keys)
    sha = client.script_load(v.source)
    batches = [packed(b) for b in state.batches] if v.args == "packed" else state.batches
    client.config_resetstat()
    n = 0
    wall = time.perf_counter()
    for b in batches:
        out = cast(bytes, client.evalsha(sha, len(b.keys), *b.keys, *b.args))
        k = len(out)
        n += k
        if v.counts and out != b"a" * k:
            raise RuntimeError(f"{v.name}: not every event accepted: {out[:40]!r}")
    wall = time.perf_counter() - wall
    stats = commandstats(client)
    prof = {
        k.decode(): float(x)
        for k, x in cast(dict[bytes, bytes], client.hgetall("prof25:t")).items()
    }
    ev = stats["evalsha"]
    return {
        "events": n,
        "us_per_event": ev["usec"] / n,
        "wall_us_per_event": wall * 1e6 / n,
        "cmdstats": stats,
        "prof": prof,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steady", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    chosen = variants()
    if args.only:
        wanted = args.only.split(",")
        chosen = [v for v in chosen if v.name in wanted]
    results: dict[str, list[dict[str, Any]]] = {v.name: [] for v in chosen}
    with private_redis(system_redis_server()) as client, scratch_dir() as tmp:
        t0 = time.perf_counter()
        state = build(
            client,
            tmp,
            events=args.events,
            customers=args.customers,
            batch=args.batch,
            steady=args.steady,
        )
        print(
            f"state: {len(state.snapshot)} keys, {len(state.batches)} batches, "
            f"built in {time.perf_counter() - t0:.1f}s",
            file=sys.stderr,
        )
        for r in range(args.rounds):
            for v in chosen:
                res = run_variant(client, state, v)
                results[v.name].append(res)
                print(
                    f"round {r + 1} {v.name:16s} {res['us_per_event']:6.2f} us/event "
                    f"(wall {res['wall_us_per_event']:.2f})",
                    file=sys.stderr,
                )
        state.rt.close()
    summary = {
        name: {
            "median_us_per_event": statistics.median(r["us_per_event"] for r in runs),
            "all": [round(r["us_per_event"], 3) for r in runs],
        }
        for name, runs in results.items()
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
