"""``meterd dev``: worker, beat and API in one process tree on the embedded default.

SQLite file and the bundled Redis (``.meterd/``) unless the environment says
otherwise; no server to install. It migrates the database, creates an org
``dev`` with a key that may do everything, starts the three processes, prints
where to look, and on Ctrl-C or SIGTERM stops them in order (API and beat
first, then the worker, which finishes its tasks), flushes every pending count
to the database and stops the embedded Redis it started before it exits
(status 0). A server another process started stays up; one dev started stays
up while another process (``meterd demo``) still uses it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.markup import escape

from meterd import embedded
from meterd.celery_config import QUEUES, celery_command, worker_command
from meterd.config import Settings, redact_url
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


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (``kill``, a supervisor, ``docker stop``) both ask
    for the ordered stop. The handler only records the signal: it never raises into
    the code it interrupts, so a signal during start-up, or a second one while the
    children are being stopped, cannot cut the stop short and orphan a child."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_dev(settings: Settings, host: str, port: int, console: Console) -> int:
    """Run until SIGINT or SIGTERM (exit status 0) or until a child exits (1); either
    way stop API, beat and worker in that order, flush, and stop the embedded Redis."""
    with StopSignals() as stop:
        return _run_dev(settings, host, port, console, stop)


def _run_dev(settings: Settings, host: str, port: int, console: Console, stop: StopSignals) -> int:
    state = Path(".meterd")
    state.mkdir(exist_ok=True)
    upgrade(settings.database_url)
    rt = Runtime.from_settings(settings)
    try:
        now = utcnow()
        rt.catalog.create_org(DEV_ORG, "meterd dev", now)
        token, _ = rt.api_keys.create(DEV_ORG, [Permission.ALL], now, name="meterd dev")
        tree = DevTree()
        try:
            _start_and_wait(tree, settings, host, port, token, console, stop)
        finally:
            why = stop.received.name if stop.received else _exited(tree)
            console.print(f"\nstopping ({why})")
            tree.stop("api")
            tree.stop("beat")
            tree.stop("worker", timeout=60)  # warm shutdown: running tasks finish
        reports = rt.flush.flush_all(utcnow(), max_batches=1000)
        flushed = sum(r.periods for r in reports)
        console.print(
            f"flushed {len(reports)} batch(es), {flushed} period(s): everything is in the database"
        )
    finally:
        rt.close()
        if settings.is_embedded_redis:
            _release_embedded_redis(settings.redis_url, console)
    return 0 if stop.received else 1


def _release_embedded_redis(url: str, console: Console) -> None:
    """Stop the embedded Redis if dev started it and no one else uses it (its AOF keeps
    the data for the next run); a server another process started stays up."""
    ours = embedded.ours_to_stop(url)
    if embedded.release(url) and ours:
        console.print(
            f"the embedded redis-server ({embedded.embedded_dir(url)}) keeps running: another"
            " process (meterd demo?) uses it; the next meterd command done with it stops it",
            soft_wrap=True,
        )


def _exited(tree: DevTree) -> str:
    dead = [n for n in tree.processes if n not in tree.alive()]
    return f"{', '.join(dead)} exited" if dead else "start-up failed"


def _start_and_wait(
    tree: DevTree,
    settings: Settings,
    host: str,
    port: int,
    token: str,
    console: Console,
    stop: StopSignals,
) -> None:
    """Start worker, beat and API (none once a stop was asked for), print where to
    look, and wait until a stop signal or until one of them exits."""
    state = Path(".meterd")
    exe = sys.executable
    children = {
        "worker": (worker_command(QUEUES, concurrency=2, loglevel="info"), "dev-worker.log"),
        "beat": (
            celery_command("beat", "-l", "info", "-s", str(state / "celerybeat-schedule")),
            "dev-beat.log",
        ),
        "api": (
            [exe, "-m", "meterd.cli", "api", "--host", host, "--port", str(port)],
            "dev-api.log",
        ),
    }
    for name, (argv, log) in children.items():
        if stop.received:
            return
        tree.start(name, argv, state / log)
    base = f"http://{host}:{port}"
    console.print(
        f"[bold]meterd dev[/bold] on {escape(redact_url(settings.database_url))}"
        f" and {escape(redact_url(settings.redis_url))}"
    )
    console.print(f"  API       {base}  (OpenAPI docs: {base}/docs)")
    console.print(f"  metrics   {base}/metrics")
    console.print(f"  org       {DEV_ORG}, API key (shown once):")
    print(f"  {token}", flush=True)
    console.print("  logs      .meterd/dev-{worker,beat,api}.log")
    console.print("  try       meterd demo   |   meterd status --watch   |   Ctrl-C to stop")
    while stop.received is None and len(tree.alive()) == len(children):
        time.sleep(0.2)
