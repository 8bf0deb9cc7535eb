"""How fast does ``meterd --help`` start? Wall time over --runs runs, beside references
measured in the same run on the same machine (so a loaded machine shows as a slower
reference, not as a slower CLI):

* ``python -c pass``: the interpreter alone;
* ``python -c "import meterd"``: the package root;
* ``python -m meterd.cli --help``: the command (the goal: under 0.3 s on an idle
  machine, which is a ratio of about 3-4 to ``python -c pass``).

Runs are interleaved (pass, import, help, pass, ...) so load that comes and goes
hits each alike; the median and the best of each are printed, with the ratios of
the medians.

    python bench/cli_startup.py            # 15 runs each
    python bench/cli_startup.py --runs 40
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import meterd'": [sys.executable, "-c", "import meterd"],
    "meterd --help": [sys.executable, "-m", "meterd.cli", "--help"],
}


def wall_time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(runs: int) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for argv in COMMANDS.values():  # warm the file cache: the first run reads from disk
        wall_time(argv, env)
    for _ in range(runs):
        for name, argv in COMMANDS.items():
            times[name].append(wall_time(argv, env))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    times = measure(args.runs)
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<28} {'median s':>9} {'best s':>8} {'x pass':>7}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<28} {median:>9.3f} {min(samples):>8.3f} {median / base:>7.1f}")
    help_median = statistics.median(times["meterd --help"])
    import_median = statistics.median(times["python -c 'import meterd'"])
    print(
        f"meterd --help: {help_median:.3f} s median over {args.runs} runs"
        f" ({help_median - import_median:.3f} s above importing meterd);"
        f" goal under 0.3 s: {'met' if help_median < 0.3 else 'not met on this run'}"
    )


if __name__ == "__main__":
    main()
