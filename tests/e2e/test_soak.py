"""The soak under faults, 60 seconds of it (``bench/soak.py``'s harness, CI settings).

Real processes over stores the harness starts itself (a redis-server with AOF,
a PostgreSQL cluster of its own), so it runs the same in both test
configurations; only the broker is the machine's Redis (db 10, its own prefix).
Producers in two processes send duplicates, events older than the hot window
and events past the late window, while the ingest worker is SIGKILLed every
15 s, the counter Redis is kill -9ed once and the database is stopped hard for
10 s. Every event sent must then be in the event log exactly once, and
``usage_periods``, the log and the live Redis totals must equal what was sent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ..conftest import require
from .conftest import BROKER_URL

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import soak

pytestmark = pytest.mark.e2e


@pytest.fixture
def ci_config() -> soak.SoakConfig:
    try:
        soak.postgres_bindir()
        soak.redis_server_binary()
    except (FileNotFoundError, ImportError) as exc:
        require("PostgreSQL's initdb/pg_ctl or redis-server", exc)
    return soak.ci_config(broker_url=BROKER_URL)


@pytest.mark.timeout(280)
def test_a_minute_under_worker_redis_and_database_kills_loses_nothing_and_counts_nothing_twice(
    ci_config: soak.SoakConfig,
) -> None:
    report = soak.run_soak(ci_config)
    print(report.table())
    print(report.timeline)

    assert report.faults == {"kill worker": 3, "kill redis": 1, "stop database": 1}, (
        "every fault must have been applied"
    )
    assert report.drained, report.problems
    assert report.sent_duplicates > 0 and report.sent_late > 0 and report.sent_too_late > 0
    assert report.lost == 0, f"{report.lost} events sent were never counted"
    assert report.double_counted == 0, f"{report.double_counted} events were counted twice"
    assert report.unexpected == 0 and report.wrong == 0
    assert (
        report.counted_periods_micros
        == report.counted_log_micros
        == report.counted_live_micros
        == report.expected_micros
    )
    assert report.dead_letters == {"late": report.sent_too_late}
    assert report.latencies, "probes must have measured the ingest latency"
    assert report.ok, report.problems
