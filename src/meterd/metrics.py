"""Prometheus metrics: one collector reading meterd's cluster-wide numbers at scrape time.

Served at ``/metrics`` by the API, and by the worker-side exporter
(``METERD_METRICS_PORT``: the worker's main process serves it). Counters and
histograms come from ``StatsStore`` (Redis: summed over every worker); gauges
are read when scraped.

============================================  =========  ==================================
metric                                        type       labels
============================================  =========  ==================================
``meterd_events_total``                       counter    ``outcome``
``meterd_ingest_batch_size``                  histogram
``meterd_ingest_duration_seconds``            histogram
``meterd_flush_duration_seconds``             histogram
``meterd_flush_lag_seconds``                  gauge      (0 when everything is flushed)
``meterd_queue_messages``                     gauge      ``queue``, ``state`` (ready|unacked)
``meterd_dead_letters``                       gauge      ``reason`` (not yet replayed)
``meterd_lifecycle_transitions_total``        counter    ``to``
``meterd_notification_failures_total``        counter
``meterd_counted_twice_total``                counter    (events a flush found logged
                                                         already: their Redis dedupe
                                                         markers were lost)
``meterd_unreadable_messages_total``          counter    ``kind`` (messages a worker could
                                                         not read as sent: dead-lettered,
                                                         read as a batch, or dropped)
``meterd_store_unavailable_total``            counter    ``task`` (tries that found Redis or
                                                         the database unavailable: each
                                                         waits with backoff, then again)
``meterd_dedupe_markers``                     gauge      (markers in Redis, hot window)
``meterd_dedupe_marker_bytes``                gauge      (Redis memory of the markers)
``meterd_events_waiting``                     gauge      (accepted, not yet in the log)
``meterd_event_log_rows``                     gauge      (PostgreSQL: estimate)
``meterd_event_log_bytes``                    gauge      (on disk; PostgreSQL only)
``meterd_event_log_oldest_timestamp_seconds`` gauge      (oldest partition or event)
``meterd_rate_limit_unchecked_total``         counter    (this process: Redis did not answer)
``meterd_redis_unsafe``                       gauge      (1: the counter Redis fails the
                                                         safety check; only runs with
                                                         ``METERD_UNSAFE_REDIS=1``)
``meterd_redis_unsafe_setting``               gauge      ``setting``, ``found`` (1 each)
``meterd_scrape_errors``                      gauge      (parts that could not be read)
============================================  =========  ==================================

The API's ``/metrics`` also serves that process's own request metrics
(``meterd.api.request_metrics``: requests and latency by route template).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from meterd.ops import (
    SAFE,
    UNKNOWN,
    RedisSafetyState,
    Storage,
    flush_lag_seconds,
    queue_depths,
    redis_safety,
    storage_figures,
)
from meterd.runtime import Runtime
from meterd.storage.stats import BUCKETS, StatsStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MeterdCollector(Collector):
    def __init__(self, runtime: Callable[[], Runtime], celery_app: Callable[[], Any]) -> None:
        self.runtime = runtime
        self.celery_app = celery_app

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime()
        errors = 0

        yield from _counters(rt.stats)

        try:
            lag = flush_lag_seconds(rt) or 0.0
            yield GaugeMetricFamily(
                "meterd_flush_lag_seconds", "Age of the oldest unflushed count", value=lag
            )
        except Exception:
            errors += 1

        try:
            depths = GaugeMetricFamily(
                "meterd_queue_messages", "Messages per queue", labels=["queue", "state"]
            )
            for depth in queue_depths(self.celery_app()):
                if depth.ready is not None:
                    depths.add_metric([depth.queue, "ready"], depth.ready)
                if depth.unacked is not None:
                    depths.add_metric([depth.queue, "unacked"], depth.unacked)
            yield depths
        except Exception:
            errors += 1

        try:
            dead = GaugeMetricFamily(
                "meterd_dead_letters", "Dead letters not yet replayed", labels=["reason"]
            )
            for reason, n in sorted(rt.dead_letters.count_by_reason().items()):
                dead.add_metric([reason], n)
            yield dead
        except Exception:
            errors += 1

        try:
            yield from _storage_gauges(storage_figures(rt))
        except Exception:
            errors += 1

        yield CounterMetricFamily(
            "meterd_rate_limit_unchecked",
            "API requests let through unchecked: Redis did not answer the rate limit",
            value=rt.rate_limiter.unchecked,
        )

        safety = redis_safety(rt)
        if safety.state == UNKNOWN:
            errors += 1
        else:
            yield from _safety_gauges(safety)

        yield GaugeMetricFamily(
            "meterd_scrape_errors", "Parts of this scrape that could not be read", value=errors
        )


def _counters(stats: StatsStore) -> Iterator[Metric]:
    """The counters and histograms kept in Redis by every worker (``StatsStore``)."""
    events = CounterMetricFamily("meterd_events", "Usage events by outcome", labels=["outcome"])
    for outcome, n in sorted(stats.events().items()):
        events.add_metric([outcome], n)
    yield events

    for name in BUCKETS:
        hist = stats.histogram(name)
        family = HistogramMetricFamily(f"meterd_{name}", _HELP[name])
        family.add_metric(
            [],
            [(_bound(b), c) for b, c in hist.buckets],
            sum_value=hist.total,
        )
        yield family

    transitions = CounterMetricFamily(
        "meterd_lifecycle_transitions", "Lifecycle transitions applied", labels=["to"]
    )
    for target, n in sorted(stats.transitions().items()):
        transitions.add_metric([target], n)
    yield transitions

    yield CounterMetricFamily(
        "meterd_notification_failures",
        "Webhook calls that failed",
        value=stats.notification_failures(),
    )

    yield CounterMetricFamily(
        "meterd_counted_twice",
        "Events counted again after Redis lost their dedupe markers, found and taken"
        " back by the flush",
        value=stats.counted_twice(),
    )

    unreadable = CounterMetricFamily(
        "meterd_unreadable_messages",
        "Messages a worker could not read as sent: dead-lettered whole (by kind),"
        " read as a batch of payloads, or dropped",
        labels=["kind"],
    )
    for kind, n in sorted(stats.unreadable().items()):
        unreadable.add_metric([kind], n)
    yield unreadable

    waits = CounterMetricFamily(
        "meterd_store_unavailable",
        "Tries of a task that found Redis or the database unavailable (each waits with"
        " backoff and tries again; the message is never dropped)",
        labels=["task"],
    )
    for task, n in sorted(stats.store_unavailable().items()):
        waits.add_metric([task], n)
    yield waits


def _safety_gauges(safety: RedisSafetyState) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "meterd_redis_unsafe",
        "1 if the counter Redis may evict or lose counts (see meterd_redis_unsafe_setting)",
        value=0 if safety.state == SAFE else 1,
    )
    settings = GaugeMetricFamily(
        "meterd_redis_unsafe_setting",
        "A setting that makes the counter Redis unsafe, and its value",
        labels=["setting", "found"],
    )
    for problem in safety.problems:
        settings.add_metric([problem.setting, problem.found], 1)
    yield settings


def _storage_gauges(store: Storage) -> Iterator[Metric]:
    for name, help_text, value in (
        ("meterd_dedupe_markers", "Dedupe markers in Redis", store.markers),
        ("meterd_dedupe_marker_bytes", "Redis memory of the markers", store.marker_bytes),
        ("meterd_events_waiting", "Accepted events not yet in the log", store.waiting_events),
        ("meterd_event_log_rows", "Rows of the event log", store.log_rows),
        ("meterd_event_log_bytes", "Event log on disk", store.log_bytes),
    ):
        if value is not None:
            yield GaugeMetricFamily(name, help_text, value=value)
    if store.log_oldest is not None:
        yield GaugeMetricFamily(
            "meterd_event_log_oldest_timestamp_seconds",
            "Oldest partition (or event) of the event log",
            value=datetime.fromisoformat(store.log_oldest).timestamp(),
        )


_HELP = {
    "ingest_batch_size": "Events per ingest task",
    "ingest_duration_seconds": "Time to validate and count one ingest task",
    "flush_duration_seconds": "Time of one flush run",
}


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


def registry_for(
    runtime: Callable[[], Runtime], celery_app: Callable[[], Any]
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MeterdCollector(runtime, celery_app))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def serve(port: int, runtime: Callable[[], Runtime], celery_app: Callable[[], Any]) -> None:
    """The worker-side exporter: a background HTTP server on ``port``."""
    from prometheus_client import start_http_server

    start_http_server(port, registry=registry_for(runtime, celery_app))
