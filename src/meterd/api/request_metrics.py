"""The API's own request metrics: rate, latency and errors per route (this process).

meterd's other metrics are cluster-wide (``meterd.metrics``: read from Redis and
the database at scrape time, the same from every process). Requests are counted
where they are served, so these are per process: Prometheus scrapes each API
replica, and a dashboard sums them over instances.

============================================  =========  ==================================
metric                                        type       labels
============================================  =========  ==================================
``meterd_api_requests_total``                 counter    ``method``, ``route``, ``status``
``meterd_api_request_duration_seconds``       histogram  ``method``, ``route``
============================================  =========  ==================================

``route`` is the route's template (``/v1/entitlements/{entitlement_id}``), never
the path a caller sent, so the number of series is bounded by the routes: a path
no route matched is ``unmatched``, and the static assets are ``/static``. A pure
ASGI middleware (no per-request task or body copy), outermost, so a request the
input limits refuse is counted too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Upper bounds (seconds) of the latency histogram's buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics(Collector):
    """What the middleware counted, as Prometheus metrics (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        #: (method, route) -> (bucket counts, sum of seconds, count)
        self._latency: dict[tuple[str, str], tuple[list[int], float, int]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            buckets, total, count = self._latency.get((method, route), ([0] * len(BUCKETS), 0.0, 0))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self._latency[(method, route)] = (buckets, total + seconds, count + 1)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            requests = dict(self._requests)
            latency = {k: (list(b), s, c) for k, (b, s, c) in self._latency.items()}
        counter = CounterMetricFamily(
            "meterd_api_requests",
            "HTTP requests this API process answered, by route template and status",
            labels=["method", "route", "status"],
        )
        for (method, route, status), n in sorted(requests.items()):
            counter.add_metric([method, route, status], n)
        yield counter
        histogram = HistogramMetricFamily(
            "meterd_api_request_duration_seconds",
            "Time this API process took to answer, by route template",
            labels=["method", "route"],
        )
        for (method, route), (buckets, total, count) in sorted(latency.items()):
            cumulative = [(str(bound), n) for bound, n in zip(BUCKETS, buckets, strict=True)]
            histogram.add_metric([method, route], [*cumulative, ("+Inf", count)], total)
        yield histogram


class RequestMetricsMiddleware:
    """Counts every HTTP request the app answers into ``metrics``."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before any answer is a server error

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.metrics.observe(
                scope.get("method", "GET"),
                route_of(scope),
                status,
                time.perf_counter() - started,
            )


def route_of(scope: Scope) -> str:
    """The template of the route that answered (bounded), set in ``scope`` by the
    router as it matched."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    if str(scope.get("path", "")).startswith("/static/"):
        return "/static"
    return "unmatched"
