"""``meterd dev``: worker, beat and API in one process tree on the embedded default.

SQLite file and the bundled Redis (``.meterd/``) unless the environment says
otherwise; no server to install. It migrates the database, creates an org
``dev`` with a key that may do everything, starts the three processes, prints
where to look, and on Ctrl-C stops them in order (API and beat first, then
the worker, which finishes its tasks) and flushes every pending count to the
database before it exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from meterd import embedded
from meterd.celery_config import QUEUES, celery_command, worker_command
from meterd.config import Settings
from meterd.migrate import upgrade
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.timeutil import utcnow

DEV_ORG = "dev"


@dataclass
class DevTree:
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], log: Path) -> None:
        with open(log, "ab") as out:
            self.processes[name] = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def alive(self) -> list[str]:
        return [n for n, p in self.processes.items() if p.poll() is None]

    def stop(self, name: str, timeout: float = 30.0) -> None:
        proc = self.processes.get(name)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def run_dev(settings: Settings, host: str, port: int, console: Console) -> int:
    state = Path(".meterd")
    state.mkdir(exist_ok=True)
    upgrade(settings.database_url)
    rt = Runtime.from_settings(settings)
    now = utcnow()
    rt.catalog.create_org(DEV_ORG, "meterd dev", now)
    token, _ = rt.api_keys.create(DEV_ORG, [Permission.ALL], now, name="meterd dev")

    tree = DevTree()
    exe = sys.executable
    tree.start(
        "worker", worker_command(QUEUES, concurrency=2, loglevel="info"), state / "dev-worker.log"
    )
    tree.start(
        "beat",
        celery_command("beat", "-l", "info", "-s", str(state / "celerybeat-schedule")),
        state / "dev-beat.log",
    )  # fmt: skip
    tree.start(
        "api",
        [exe, "-m", "meterd.cli", "api", "--host", host, "--port", str(port)],
        state / "dev-api.log",
    )
    base = f"http://{host}:{port}"
    console.print(f"[bold]meterd dev[/bold] on {settings.database_url} and {settings.redis_url}")
    console.print(f"  API       {base}  (OpenAPI docs: {base}/docs)")
    console.print(f"  metrics   {base}/metrics")
    console.print(f"  org       {DEV_ORG}, API key (shown once):")
    print(f"  {token}", flush=True)
    console.print("  logs      .meterd/dev-{worker,beat,api}.log")
    console.print("  try       meterd demo   |   meterd status --watch   |   Ctrl-C to stop")

    interrupted = False
    try:
        while len(tree.alive()) == 3:
            time.sleep(0.5)
    except KeyboardInterrupt:
        interrupted = True
    dead = [n for n in ("worker", "beat", "api") if n not in tree.alive()]
    console.print("\nstopping" + ("" if interrupted else f" ({', '.join(dead)} exited)"))
    tree.stop("api")
    tree.stop("beat")
    tree.stop("worker", timeout=60)  # warm shutdown: running tasks finish
    reports = rt.flush.flush_all(utcnow(), max_batches=1000)
    flushed = sum(r.periods for r in reports)
    console.print(
        f"flushed {len(reports)} batch(es), {flushed} period(s): everything is in the database"
    )
    rt.close()
    if settings.is_embedded_redis:
        embedded.stop(settings.redis_url)  # its AOF keeps the data for the next run
    return 0 if interrupted else 1
