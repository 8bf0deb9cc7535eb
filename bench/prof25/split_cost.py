"""Redis CPU of getting one event's fields into Lua: nine ARGV an event plus its two
keys (what the base passed, eleven strings) beside one ARGV split by ingest.lua's
own EVENT_FIELDS pattern, on a private redis-server, same run. Only that step: a
script reads the fields of 500 events and does nothing else. Rounds alternate the
two; figures are the server main thread's CPU (INFO cpu) per event, medians, beside
the same-run ratio.

    cd <worktree> && PYTHONPATH=$PWD/src:$PWD/bench nice -n 10 \\
        /work/main/.venv/bin/python bench/prof25/split_cost.py
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path
from typing import Any, cast

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import private_redis, system_redis_server
from meterd.lua import read_fragment
from meterd.storage.counters import EVENT_FIELD_SEPARATOR

EVENTS, CALLS, ROUNDS = 500, 20, 9
LINE = (
    '1000000:\t{"c":"c123","f":"api_calls","t":1765116000000000,'
    '"r":1765116060000000,"k":6,"d":{}}\t'
)
FIELDS = [
    "10",
    "11",
    "1765116000000000",
    "1764547200000000",
    "1000000",
    "",
    "acme:5:bench:p1234",
    "3456789012345",
    "S",
    "",
    LINE,
]
ELEVEN = """local s = 0
for i = 1, #ARGV / 9 do
  local b = 9 * (i - 1)
  local r, u = KEYS[2 * i - 1], KEYS[2 * i]
  local a1, a2, a3, a4, a5, a6, a7, a8, a9 = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3],
    ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], ARGV[b + 8], ARGV[b + 9]
  s = s + #a7
end
return s"""
ONE = """local EVENT_FIELDS = %s
local s = 0
for i = 1, #ARGV do
  local r, u, a1, a2, a3, a4, a5, a6, a8, a9, a7 = string.match(ARGV[i], EVENT_FIELDS)
  r, u = KEYS[tonumber(r)], KEYS[tonumber(u)]
  s = s + #a7
end
return s"""


def server_cpu(client: redis.Redis) -> float:
    info = cast(dict[str, Any], client.info("cpu"))
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


def main() -> None:
    pattern = re.search(r"local EVENT_FIELDS = (.*?)\n\n", read_fragment("ingest"), re.S)
    assert pattern is not None, "ingest.lua defines EVENT_FIELDS"
    packed = EVENT_FIELD_SEPARATOR.join(FIELDS)
    keys_eleven = [f"k{i}" for i in range(2 * EVENTS)]
    args_eleven = [
        f for _ in range(EVENTS) for f in FIELDS[2:6] + FIELDS[6:8] + FIELDS[10:] + FIELDS[8:10]
    ]
    shapes: dict[str, tuple[str, list[str], list[str]]] = {
        "eleven strings": (ELEVEN, keys_eleven, args_eleven),
        "one ARGV, split": (ONE % pattern[1], ["k0", "k1"], [packed] * EVENTS),
    }
    figures: dict[str, list[float]] = {name: [] for name in shapes}
    ratios = []
    with private_redis(system_redis_server()) as client:
        shas = {name: client.script_load(src) for name, (src, _, _) in shapes.items()}
        assert (
            len({client.evalsha(shas[n], len(k), *k, *a) for n, (_, k, a) in shapes.items()}) == 1
        )
        for _ in range(ROUNDS):
            got = {}
            for name, (_, keys, args) in shapes.items():
                cpu = server_cpu(client)
                for _ in range(CALLS):
                    client.evalsha(shas[name], len(keys), *keys, *args)
                got[name] = (server_cpu(client) - cpu) * 1e6 / (CALLS * EVENTS)
                figures[name].append(got[name])
            ratios.append(got["one ARGV, split"] / got["eleven strings"])
    for name, values in figures.items():
        print(f"| {name} | {statistics.median(values):.2f} us/event server CPU |")
    print(
        f"same-run ratio one/eleven {statistics.median(ratios):.3f} (medians of {ROUNDS} rounds, "
        f"{CALLS} calls of {EVENTS} events)"
    )


if __name__ == "__main__":
    main()
