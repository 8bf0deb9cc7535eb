"""Metrics: recorded in Redis by the tasks, exposed in Prometheus format, parsed back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meterd.core.timeutil import utcnow
from meterd.metrics import registry_for, render
from meterd.runtime import Runtime
from meterd.testing import event

from .helpers import grant


class NoBroker:
    """A Celery app stand-in whose broker cannot be reached."""

    def connection_for_read(self) -> Any:
        raise ConnectionError("no broker here")


def scrape(rt: Runtime) -> dict[str, list[Any]]:
    text = render(registry_for(lambda: rt, NoBroker)).decode()
    families: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.samples
    return families


def value(samples: list[Any], name: str, **labels: str) -> float:
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    raise AssertionError(f"no sample {name} {labels} in {samples}")


@pytest.fixture
def counted(runtime: Runtime) -> Iterator[Runtime]:
    now = utcnow()
    grant(runtime, starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=1))
    events = [event(event_id=f"e{i}", time=now) for i in range(3)] + [{"junk": 1}]
    report = runtime.ingest.ingest(events, now=now)
    runtime.stats.record_ingest(report.decided_before_counting, len(events), 0.004)
    yield runtime


def test_events_are_counted_by_outcome(counted: Runtime) -> None:
    samples = scrape(counted)["meterd_events"]
    assert value(samples, "meterd_events_total", outcome="accepted") == 3
    assert value(samples, "meterd_events_total", outcome="invalid") == 1


def test_batch_size_and_duration_are_histograms(counted: Runtime) -> None:
    families = scrape(counted)
    sizes = families["meterd_ingest_batch_size"]
    assert value(sizes, "meterd_ingest_batch_size_bucket", le="1.0") == 0
    assert value(sizes, "meterd_ingest_batch_size_bucket", le="10.0") == 1
    assert value(sizes, "meterd_ingest_batch_size_count") == 1
    durations = families["meterd_ingest_duration_seconds"]
    assert value(durations, "meterd_ingest_duration_seconds_bucket", le="0.005") == 1
    assert value(durations, "meterd_ingest_duration_seconds_sum") == pytest.approx(0.004)


def test_flush_lag_grows_with_unflushed_counts_and_drops_to_zero(counted: Runtime) -> None:
    assert value(scrape(counted)["meterd_flush_lag_seconds"], "meterd_flush_lag_seconds") >= 0
    assert counted.counters.flush_lag_since() is not None
    counted.flush.flush_all(utcnow())
    assert counted.counters.flush_lag_since() is None
    assert value(scrape(counted)["meterd_flush_lag_seconds"], "meterd_flush_lag_seconds") == 0


def test_dead_letters_by_reason_and_transitions(counted: Runtime) -> None:
    counted.stats.record_transitions({"EXPIRED": 2})
    counted.stats.record_notification_failures(3)
    families = scrape(counted)
    assert value(families["meterd_dead_letters"], "meterd_dead_letters", reason="invalid") == 1
    transitions = families["meterd_lifecycle_transitions"]
    assert value(transitions, "meterd_lifecycle_transitions_total", to="EXPIRED") == 2
    failures = families["meterd_notification_failures"]
    assert value(failures, "meterd_notification_failures_total") == 3


def test_a_broker_that_does_not_answer_is_reported_not_fatal(counted: Runtime) -> None:
    families = scrape(counted)
    assert "meterd_queue_messages" not in families
    assert value(families["meterd_scrape_errors"], "meterd_scrape_errors") == 1
