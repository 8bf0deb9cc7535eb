"""A flush process SIGKILLed between Redis and the database commit, and after it."""

from __future__ import annotations

import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.testing import event

from ..helpers import assert_log_matches_periods, flushed_total
from .test_worker_exactness import grant_customers

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).with_name("flush_and_die.py")


def flush_and_die(env: dict[str, str], point: str) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), point], env=env, capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]


def live_total(rt: Runtime) -> Decimal:
    now = utcnow()
    return sum(
        (
            b.consumed
            for c in ("cust-0", "cust-1")
            for b in rt.balance.balances("acme", c, "api_calls", now)
        ),
        Decimal(0),
    )


def ingest(rt: Runtime, prefix: str, n: int) -> None:
    events = [
        event(customer=f"cust-{i % 2}", event_id=f"{prefix}{i}", quantity="1.000001")
        for i in range(n)
    ]
    assert rt.ingest.ingest(events, now=utcnow()).counts == {"accepted": n}


def test_flush_killed_before_and_after_commit_counts_exactly(
    e2e_runtime: Runtime, e2e_env: dict[str, str]
) -> None:
    rt = e2e_runtime
    grant_customers(rt, 2, ("50",))
    ingest(rt, "a", 30)

    flush_and_die(e2e_env, "before-commit")
    assert flushed_total(rt) == 0, "an uncommitted flush must leave no trace in the database"
    assert rt.counters.pending_fields(), "the batch must still be in Redis"
    assert live_total(rt) == Decimal("30.000030")

    ingest(rt, "b", 20)  # usage keeps arriving while a batch is stuck in flight
    flush_and_die(e2e_env, "after-commit")
    assert flushed_total(rt) == Decimal("30.000030"), "the resumed batch is committed once"
    assert live_total(rt) == Decimal("50.000050"), (
        "a committed batch still in Redis is not added twice"
    )

    reports = rt.flush.flush_all(utcnow())
    assert [r.applied for r in reports] == [False, True]
    assert flushed_total(rt) == Decimal("50.000050")
    assert rt.counters.pending_fields() == {}
    assert live_total(rt) == Decimal("50.000050")
    assert_log_matches_periods(rt)
