"""The soak under faults, 60 seconds of it (``bench/soak.py``'s harness, CI settings).

Real processes over stores the harness starts itself (a redis-server with AOF,
a PostgreSQL cluster of its own), so it would run the same in both test
configurations: it runs once, in the real one. Only the broker is the machine's
Redis (db 10, its own prefix).
Producers in two processes send duplicates, events older than the hot window
and events past the late window, and the harness a poison message twice a
second (every kind of ``soak.POISON_KINDS``), while the ingest worker is
SIGKILLed every 15 s, the counter Redis is kill -9ed once and made full once
(9 s at ``maxmemory``, a worker kill inside), and the database is stopped hard
for 10 s. Every event sent must then be in the event log exactly once,
``usage_periods``, the log and the live Redis totals must equal what was sent,
every poison message must have ended as it must (its events counted, or its
dead letter stored once), and no worker may have exited by itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from meterd.testing import redis_server_binary

from ..conftest import BACKEND, require
from .conftest import BROKER_URL

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import soak

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        BACKEND != "real",
        reason="the soak starts its own Redis and PostgreSQL whatever the configuration:"
        " it runs once, in the real configuration",
    ),
]


@pytest.fixture(scope="module")
def report() -> soak.SoakReport:
    """One run, read by the tests of this module."""
    try:
        soak.postgres_bindir()
        redis_server_binary()
    except (FileNotFoundError, ImportError) as exc:
        require("PostgreSQL's initdb/pg_ctl or redis-server", exc)
    run = soak.run_soak(soak.ci_config(broker_url=BROKER_URL))
    print(run.table())
    print(run.timeline)
    return run


@pytest.mark.timeout(280)
def test_a_minute_of_poison_and_worker_redis_and_database_faults_loses_and_doubles_nothing(
    report: soak.SoakReport,
) -> None:
    assert report.faults == {
        "kill worker": 3,
        "kill redis": 1,
        "stop database": 1,
        "fill redis": 1,
    }, "every fault must have been applied"
    (full,) = report.redis_full
    assert full["refused"] > 0, "the full Redis must have refused writes"
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
    assert report.latencies, "probes must have measured the ingest latency"
    assert report.restarts_after_exit == 0, "a worker exited by itself"
    assert report.log_lines["Unrecoverable error"] == 0
    assert report.ok, report.problems


@pytest.mark.timeout(280)
def test_every_poison_message_of_that_minute_ends_as_it_must(report: soak.SoakReport) -> None:
    """Its events counted (in the totals above), or one dead letter of it; items
    pushed raw onto the list may be lost to a SIGKILL only (documented)."""
    assert set(report.poison_sent) == {kind.label for kind in soak.POISON_KINDS}
    assert report.poison_events > 0 and report.lost == report.double_counted == 0
    letters_due = {
        kind.label: report.poison_sent[kind.label]
        for kind in soak.POISON_KINDS
        if kind.becomes not in ("counted", "nothing")
    }
    raw = letters_due.pop("raw_push")
    found = dict(report.poison_letters)
    assert found.pop("raw_push", 0) == raw - report.raw_lost
    assert found == letters_due
    assert report.poison_letters_doubled == {}, "one dead letter per message"
    assert report.dead_letters == {
        "late": report.sent_too_late,
        "invalid": sum(report.poison_letters.values()),
    }
    assert report.ok, report.problems
