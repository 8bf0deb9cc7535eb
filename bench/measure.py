"""What the ingest benches measure besides events/s, with no meterd import (so the
same code measures today's meterd and an old one, bench/ingest_vs_old.py):

* ``evalsha_usec``: Redis's own time in EVALSHA (``INFO commandstats``), the
  ingest script's cost on a Redis that runs nothing else (the broker elsewhere);
* ``group_cpu_seconds``: the CPU time (user + system) of every process of a
  process group, a ``celery worker`` started with ``start_new_session=True``
  (its main process and its pool children);
* ``process_cpu_seconds``: of the pid of the benches' own redis-server
  (``meterd.testing.PrivateRedis``, no persistence, so that no other program's
  commands land in its commandstats), the cross-check of EVALSHA's time on a
  busy machine (commandstats measures wall time inside a command, which grows
  when the server is descheduled; CPU time does not, but counts all its work).
"""

from __future__ import annotations

import os
from pathlib import Path

import redis

TICKS = os.sysconf("SC_CLK_TCK")


def evalsha_usec(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("usec", 0))


def group_cpu_seconds(pgid: int, *, leader: bool = True) -> float:
    """User + system CPU seconds of the live processes of process group ``pgid``
    (``leader=False``: without the group's leader, a worker's pool children alone)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and (leader or int(entry.name) != pgid):
            # state, ppid, pgrp, ...; utime, stime at 11, 12
            ticks += int(fields[11]) + int(fields[12])
    return ticks / TICKS


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS
