"""Tables from run.py's --out JSON: the phases (us/event, corrected for the timer's
own cost; redis.call()s/event by command), the commands Redis itself timed, and
each variant beside the unmodified script.

    python bench/prof25/report.py /tmp/prof25/fresh.json
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any

ORDER = [
    "setup", "prelude", "loop", "marker_hit", "res_load", "cands", "burn", "bound", "apply",
    "add_marker", "record", "stats", "write_markers", "save_gen", "write_used", "write_latest",
    "write_pending", "return",
]  # fmt: skip


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def phases(runs: list[dict[str, Any]], counts: list[dict[str, Any]]) -> None:
    per_phase: dict[str, list[float]] = defaultdict(list)
    totals, overheads = [], []
    for r in runs:
        p, n = r["prof"], r["events"]
        calib = p["t:calib"] / p["n:calib"]
        overheads.append(calib)
        total = 0.0
        for name in ORDER:
            t = p.get(f"t:{name}", 0.0) - p.get(f"n:{name}", 0.0) * calib
            per_phase[name].append(t / n)
            total += t / n
        totals.append(total)
    calls: dict[str, dict[str, float]] = defaultdict(dict)
    c = counts[0] if counts else {"prof": {}, "events": 1}
    for key, value in c["prof"].items():
        if key.startswith("c:"):
            _, phase, cmd = key.split(":", 2)
            calls[phase][cmd] = value / c["events"]
    print(f"timer read (TIME from Lua, subtracted per switch): {med(overheads):.2f} us")
    print("| phase | us/event | redis.call()s/event |")
    print("|---|---:|---|")
    for name in ORDER:
        kinds = ", ".join(f"{k} {v:.3f}" for k, v in sorted(calls.get(name, {}).items()))
        print(f"| {name} | {med(per_phase[name]):.2f} | {kinds} |")
    all_calls = sum(v for d in calls.values() for v in d.values())
    print(f"| **sum of phases** | **{med(totals):.2f}** | **{all_calls:.2f}** |")


def cmdstats(runs: list[dict[str, Any]]) -> None:
    r = runs[0]
    n = r["events"]
    print("| command | calls/event | usec/call (inside Redis) | us/event |")
    print("|---|---:|---:|---:|")
    rows = sorted(r["cmdstats"].items(), key=lambda kv: -kv[1]["usec"])
    for cmd, s in rows:
        print(f"| {cmd} | {s['calls'] / n:.3f} | {s['usec_per_call']:.2f} | {s['usec'] / n:.2f} |")


def main() -> None:
    with open(sys.argv[1]) as f:
        data = json.load(f)
    res = data["results"]
    print(f"args: {data['args']}")
    base = [r["us_per_event"] for r in res["base"]]
    print("\n## variants (EVALSHA usec / events, INFO commandstats; median of rounds)")
    print("| variant | us/event | rounds | vs base (same round, median) |")
    print("|---|---:|---|---:|")
    for name, runs in res.items():
        xs = [r["us_per_event"] for r in runs]
        diffs = [x - b for x, b in zip(xs, base, strict=False)]
        print(
            f"| {name} | {med(xs):.2f} | {', '.join(f'{x:.2f}' for x in xs)} | {med(diffs):+.2f} |"
        )
    if "prof_time" in res and "prof_count" in res:
        print("\n## phases (profiling copy)")
        phases(res["prof_time"], res["prof_count"])
    if "prof_lean_all" in res:
        print("\n## phases after lean + flat_res + batched (calls: commandstats of lean+all)")
        phases(res["prof_lean_all"], [])
    for name in ("base", "lean_lua", "lean+all"):
        if name in res:
            print(f"\n## commands inside {name} (Redis's own timing of each command)")
            cmdstats(res[name])


if __name__ == "__main__":
    main()
