"""Keeps the Redis copy of "which entitlements can this usage land on" fresh.

Ingest workers fill a missing entry after a cache miss (never overwriting);
the catalog and lifecycle services replace an entry right after they commit a
change, so ingest sees a new, suspended or renewed entitlement at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from meterd.storage.counters import CounterStore
from meterd.storage.resolution import encode_resolution
from meterd.storage.resolution_views import CustomerFeature, ResolutionViewStore

#: A customer without entitlements is cached briefly, so a flood of events for an
#: unknown customer does not query the database for every batch.
EMPTY_TTL_SECONDS = 60


class ResolutionCache:
    def __init__(
        self,
        counters: CounterStore,
        views: ResolutionViewStore,
        *,
        ttl_seconds: int,
        late_window: timedelta,
    ) -> None:
        self.counters = counters
        self.views = views
        self.ttl_seconds = ttl_seconds
        self.late_window = late_window

    def fill(self, wanted: Iterable[CustomerFeature], now: datetime) -> None:
        """Load missing entries (after a cache miss during ingest)."""
        self._store(wanted, now, replace=False)

    def refresh(self, wanted: Iterable[CustomerFeature], now: datetime) -> None:
        """Replace entries (after a committed change to entitlements)."""
        self._store(wanted, now, replace=True)

    def _store(self, wanted: Iterable[CustomerFeature], now: datetime, *, replace: bool) -> None:
        loaded = self.views.views(wanted, usable_after=now - self.late_window)
        # Totals are seeded (HSETNX) before the entry that makes them reachable is set.
        self.counters.store_resolutions(
            [
                (
                    org,
                    customer,
                    feature,
                    encode_resolution(views, near=now),
                    self.ttl_seconds if views else min(EMPTY_TTL_SECONDS, self.ttl_seconds),
                    flushed,
                )
                for (org, customer, feature), (views, flushed) in loaded.items()
            ],
            replace=replace,
        )
