"""Redis time per event of ``ingest.lua``: a base revision's script beside this tree's,
same run (issue 25). On a private redis-server, from one saved state (setup_state.py,
built by this tree), both scripts count the same batches: this tree's
``CounterStore.add_batch`` captures them, and the base's ARGV differs only in the
record argument (this tree passes ``<value>:<target>\\t<record>\\t``, the base the
record alone), which is cut back for the base; a base of nine arguments an event gets
them unpacked. Rounds alternate the two (and which goes first), each from the same
restored bytes. Two figures: EVALSHA usec / events from ``INFO
commandstats`` (reset before each run: wall time inside the call, which a busy
neighbour inflates) and the server main thread's CPU time / events from ``INFO cpu``
(what the calls cost, steadier on a shared machine). Every event must answer ``a``.

    cd <worktree> && PYTHONPATH=$PWD/src:$PWD/bench nice -n 10 \\
        /work/main/.venv/bin/python bench/prof25/compare.py --base 2007b94 --rounds 7 [--steady]

The base's scripts come from ``git archive <base> src/meterd/lua``; this tree's batches
are passed to a base without the candidates the worker gives (``ungiven``).

``--cache``: no base; this tree's script twice, on the batches ``add_batch`` sends with
the worker's resolution cache (the candidates given, storage/resolution_cache.py) and
without it (``CounterStore(resolution_cache=False)``), captured from the same state.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from setup_state import Batch, State, build, capture_batches, restore, scratch_dir

from memory import private_redis, system_redis_server
from meterd.core.event_parsing import parse_event
from meterd.core.events import UsageEvent
from meterd.lua import assemble, script_source
from meterd.storage.counters import EVENT_FIELD_SEPARATOR

ROOT = Path(__file__).resolve().parent.parent.parent
EVENT_ARGS = 9
RECORD = 7  # ARGV[9i + 7]


def ungiven(batch: Batch) -> Batch:
    """The batch as add_batch sent it before the worker gave candidates (issue 25):
    no given entries and candidates, and no given field in an event."""
    args = list(batch.args[:9])
    for packed in batch.args[11:]:
        fields = packed.split(EVENT_FIELD_SEPARATOR)
        del fields[10]
        args.append(EVENT_FIELD_SEPARATOR.join(fields))
    return Batch(batch.keys, args)


def base_script(rev: str) -> str:
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src/meterd/lua"],
        check=True,
        capture_output=True,
    ).stdout
    files: dict[str, str] = {}
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            if handle is not None:
                files[member.name.removeprefix("src/meterd/lua/")] = handle.read().decode()

    def read(name: str) -> str:
        if name not in files:
            raise FileNotFoundError(name)
        return files[name]

    return assemble("ingest.lua", read)


def unpacked(batch: Batch) -> Batch:
    """The same batch as a base before one-argument events takes it: nine ARGV an
    event (time, month, value, target, key, digest, record, aggregation, hold) and
    its two keys, repeated for each event."""
    batch = ungiven(batch)
    keys, args = list(batch.keys[:9]), list(batch.args[:9])
    for packed in batch.args[9:]:
        res, used, *fields = packed.split(EVENT_FIELD_SEPARATOR)
        keys += (batch.keys[int(res) - 1], batch.keys[int(used) - 1])
        ts, month, units, target, key, digest, agg, hold, line = fields
        args += (ts, month, units, target, key, digest, line, agg, hold)
    return Batch(keys, args)


def base_batch(batch: Batch) -> Batch:
    """The same batch in the base's ARGV: the record alone."""
    args = list(batch.args)
    for i in range(1, (len(batch.keys) - 9) // 2 + 1):
        line = args[EVENT_ARGS * i + RECORD - 1]
        args[EVENT_ARGS * i + RECORD - 1] = line[line.index("\t") + 1 : -1]
    return Batch(batch.keys, args)


def run(
    client: redis.Redis, state: State, source: str, batches: list[Batch]
) -> tuple[float, float]:
    """(EVALSHA usec / event from commandstats, server CPU us / event)."""
    restore(client, state.snapshot)
    sha = client.script_load(source)
    client.config_resetstat()
    cpu = server_cpu(client)
    n = 0
    for b in batches:
        got = cast(bytes, client.evalsha(sha, len(b.keys), *b.keys, *b.args))
        if got != b"a" * len(got):
            raise RuntimeError(f"not every event accepted: {got[:40]!r}")
        n += len(got)
    cpu = server_cpu(client) - cpu
    stats = cast(dict[str, Any], client.info("commandstats"))
    return float(stats["cmdstat_evalsha"]["usec"]) / n, cpu * 1e6 / n


def server_cpu(client: redis.Redis) -> float:
    """CPU seconds the server's main thread has used (getrusage): unlike
    commandstats' wall time, it does not grow when a neighbour takes the core."""
    info = cast(dict[str, Any], client.info("cpu"))
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="2007b94")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steady", action="store_true")
    parser.add_argument(
        "--cache", action="store_true", help="this tree with the resolution cache on vs off"
    )
    args = parser.parse_args()
    this_source = script_source("ingest.lua")
    sources = {"base": this_source if args.cache else base_script(args.base), "this": this_source}
    base_name = "cache off" if args.cache else f"base {args.base}"
    this_name = "cache on" if args.cache else "this tree"
    figures: dict[str, list[tuple[float, float]]] = {"base": [], "this": []}
    ratios: list[tuple[float, float]] = []
    with private_redis(system_redis_server()) as client, scratch_dir() as tmp:
        state = build(
            client,
            tmp,
            events=args.events,
            customers=args.customers,
            batch=args.batch,
            steady=args.steady,
        )
        if args.cache:
            state.rt.counters.resolution_cache = None
            evs = [parse_event(r, received_at=state.now) for r in state.raw]
            off = capture_batches(
                state.rt, [e for e in evs if isinstance(e, UsageEvent)], args.batch, state.now
            )
            assert any(b.args[10] for b in state.batches), "candidates given"
            assert not any(b.args[10] for b in off), "no candidates given"
            batches = {"base": off, "this": state.batches}
        else:
            # a base that already takes the record's prefix (a commit of this branch)
            # takes the batches as they are
            cut = "line_record" not in sources["base"]
            base = (
                state.batches
                if "ARGV[i + 11]" in sources["base"]
                else [ungiven(b) for b in state.batches]
            )
            if "EVENT_FIELDS" not in sources["base"]:  # nine arguments an event
                base = [unpacked(b) for b in base]
            batches = {
                "base": [base_batch(b) for b in base] if cut else base,
                "this": state.batches,
            }
        for r in range(args.rounds):
            # who goes first alternates: the second of a pair may pay for the first
            order = ["base", "this"] if r % 2 == 0 else ["this", "base"]
            got = {name: run(client, state, sources[name], batches[name]) for name in order}
            for name, us in got.items():
                figures[name].append(us)
            ratios.append((got["this"][0] / got["base"][0], got["this"][1] / got["base"][1]))
            print(
                f"round {r + 1}: EVALSHA {base_name} {got['base'][0]:.2f}, {this_name} "
                f"{got['this'][0]:.2f}; server CPU {base_name} {got['base'][1]:.2f}, "
                f"{this_name} {got['this'][1]:.2f} us/event",
                file=sys.stderr,
            )
        state.rt.close()
    shape = "steady" if args.steady else "fresh"
    for k, what in enumerate(("EVALSHA usec (commandstats)", "server CPU (INFO cpu)")):
        base = statistics.median(f[k] for f in figures["base"])
        this = statistics.median(f[k] for f in figures["this"])
        ratio = statistics.median(r[k] for r in ratios)
        print(
            f"{shape} {what}: {base_name} {base:.2f} us/event, {this_name} {this:.2f} "
            f"us/event, same-run ratio {this_name}/{base_name} {ratio:.3f} "
            f"(medians of {args.rounds} rounds; {args.events} events, {args.customers} "
            f"customers, batches of {args.batch})"
        )


if __name__ == "__main__":
    main()
