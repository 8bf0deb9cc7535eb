"""Helpers for testing code that produces or counts usage (shipped with the package)."""

from __future__ import annotations

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
    condition: Callable[[], bool], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)
