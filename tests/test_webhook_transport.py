"""The delivery client's transport (services/webhook_transport): httpcore's pool with
the SSRF guard below httpx, its errors raised as httpx's, the guard's refusal as is."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from meterd.services.webhook_targets import RefusedTarget
from meterd.services.webhook_transport import GuardedTransport


def client(**kwargs: object) -> httpx.Client:
    return httpx.Client(transport=GuardedTransport(**kwargs), timeout=0.5)  # type: ignore[arg-type]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_refused_connection_is_httpx_connect_error(closed_port: int) -> None:
    with client(allow_private=True) as c, pytest.raises(httpx.ConnectError):
        c.post(f"http://127.0.0.1:{closed_port}/hook", content=b"{}")


def test_a_receiver_that_never_answers_is_httpx_read_timeout(silent_port: int) -> None:
    with client(allow_private=True) as c, pytest.raises(httpx.ReadTimeout):
        c.post(f"http://127.0.0.1:{silent_port}/hook", content=b"{}")


def test_the_guards_refusal_comes_through_unmapped(closed_port: int) -> None:
    with client(allow_private=False) as c, pytest.raises(RefusedTarget, match="loopback"):
        c.post(f"http://127.0.0.1:{closed_port}/hook", content=b"{}")


def test_a_name_is_resolved_by_the_given_resolver(closed_port: int) -> None:
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1"]

    with client(allow_private=True, resolver=resolver) as c, pytest.raises(httpx.ConnectError):
        c.post(f"http://hooks.example.test:{closed_port}/hook", content=b"{}")
    assert asked == [("hooks.example.test", closed_port)]
