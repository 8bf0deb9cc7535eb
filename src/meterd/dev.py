"""``meterd dev``: worker, beat and API in one process tree on the embedded default.

SQLite file and the bundled Redis (``.meterd/``) unless the environment says
otherwise; no server to install. It checks that the API's port is free (before
anything else: a taken port is one line, no key, nothing started), migrates
the database, creates an org ``dev`` with a key that may do everything (one
key, kept in ``.meterd/dev-key`` and reused at every start while it is valid;
any other ``meterd dev`` key is revoked), starts the three processes, prints
where to look, and on Ctrl-C or SIGTERM stops them in order (API and beat
first, then the worker, which finishes its tasks), flushes every pending count
to the database and stops the embedded Redis it started before it exits
(status 0). A server another process started stays up; one dev started stays
up while another process (``meterd demo``) still uses it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.markup import escape

from meterd import embedded
from meterd.celery_config import QUEUES, celery_command, worker_command
from meterd.config import Settings, redact_url
from meterd.core.errors import ConflictError, InvalidError, UnauthorizedError
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import ApiKeyService, Permission
from meterd.storage.migrate import upgrade

DEV_ORG = "dev"
#: The name of dev's key: at most one key of this name is active in org ``dev``.
DEV_KEY_NAME = "meterd dev"
STATE = Path(".meterd")
#: Where dev keeps its key between starts (readable by the owner only).
DEV_KEY_FILE = STATE / "dev-key"


def check_port_free(host: str, port: int) -> None:
    """Refuse, in one line, a port the API could not listen on, before anything starts.
    Binds as uvicorn does (``SO_REUSEADDR``, so a port in TIME_WAIT counts as free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConflictError(
                f"port {port} on {host} is already in use (another `meterd dev` or"
                f" `meterd api`?): stop that process, or choose another port with --port"
            ) from None
        reason = exc.strerror or str(exc)
        raise InvalidError(f"cannot listen on {host} port {port}: {reason}") from None


def dev_key(keys: ApiKeyService, key_file: Path, now: datetime) -> tuple[str, bool]:
    """The key of org ``dev`` that may do everything: the one recorded in ``key_file``
    while it is still valid, else a new one (recorded there). Every other active
    ``meterd dev`` key is revoked, so at most one is alive. Returns the key and
    whether it was reused."""
    token = _read_key(key_file)
    kept: str | None = None
    if token is not None:
        with contextlib.suppress(UnauthorizedError):  # expired: replaced below
            principal = keys.authenticate(token)
            if principal and principal.org == DEV_ORG and principal.may(Permission.ALL):
                kept = principal.key_id
    reused = kept is not None
    if token is None or kept is None:
        token, row = keys.create(DEV_ORG, [Permission.ALL], now, name=DEV_KEY_NAME)
        kept = row.id
        _write_key(key_file, token)
    for key in keys.list(DEV_ORG):
        if key.name == DEV_KEY_NAME and key.status == "active" and key.id != kept:
            keys.revoke(key.id, now)
    return token, reused


def _read_key(key_file: Path) -> str | None:
    try:
        return key_file.read_text().strip() or None
    except OSError:
        return None


def _write_key(key_file: Path, token: str) -> None:
    """Write the key readable by its owner only, replacing any earlier one at once."""
    embedded.make_state_dir(key_file.parent)
    temporary = key_file.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(token + "\n")
    os.replace(temporary, key_file)


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
    check_port_free(host, port)
    embedded.make_state_dir(STATE)
    upgrade(settings.database_url)
    rt = Runtime.from_settings(settings)
    try:
        now = utcnow()
        rt.catalog.create_org(DEV_ORG, "meterd dev", now)
        token, reused = dev_key(rt.api_keys, DEV_KEY_FILE, now)
        tree = DevTree()
        try:
            _start_and_wait(tree, settings, host, port, (token, reused), console, stop)
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
    if not dead:
        return "start-up failed"
    return ", ".join(f"{name} exited: see {STATE / f'dev-{name}.log'}" for name in dead)


def _start_and_wait(
    tree: DevTree,
    settings: Settings,
    host: str,
    port: int,
    key: tuple[str, bool],
    console: Console,
    stop: StopSignals,
) -> None:
    """Start worker, beat and API (none once a stop was asked for), print where to
    look, and wait until a stop signal or until one of them exits."""
    exe = sys.executable
    children = {
        "worker": (worker_command(QUEUES, concurrency=2, loglevel="info"), "dev-worker.log"),
        "beat": (
            celery_command("beat", "-l", "info", "-s", str(STATE / "celerybeat-schedule")),
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
        tree.start(name, argv, STATE / log)
    base = f"http://{host}:{port}"
    console.print(
        f"[bold]meterd dev[/bold] on {escape(redact_url(settings.database_url))}"
        f" and {escape(redact_url(settings.redis_url))}"
    )
    console.print(f"  API       {base}  (OpenAPI docs: {base}/docs)")
    console.print(f"  metrics   {base}/metrics")
    console.print(f"  console   {base}/console  (sign in with the API key below)")
    token, reused = key
    age = "the same as last time" if reused else "new"
    console.print(f"  org       {DEV_ORG}, API key ({age}; in {DEV_KEY_FILE}):", soft_wrap=True)
    print(f"  {token}", flush=True)
    console.print("  logs      .meterd/dev-{worker,beat,api}.log")
    console.print("  try       meterd demo   |   meterd status --watch   |   Ctrl-C to stop")
    while stop.received is None and len(tree.alive()) == len(children):
        time.sleep(0.2)
