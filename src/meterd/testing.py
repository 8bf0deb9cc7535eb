"""Helpers for testing code that produces or counts usage (shipped with the package)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

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
