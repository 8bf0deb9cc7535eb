"""A version number per org, bumped whenever one of its meters is created.

Workers keep an org's meters in memory (``services.meters.MeterCatalog``) and
compare this number once a batch: a new meter for an event type they already
know is then used from the first batch read after its creation was
acknowledged, instead of after the cache expires (events in between would
silently not feed it). The number only has to differ, never to grow: a Redis
that lost it reads 0, which differs from what a worker holds, and the worker
reads its meters again.
"""

from __future__ import annotations

import redis

from meterd.core.redis_keys import RedisKeys


class MeterVersions:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys

    def current(self, org: str) -> int:
        """The org's meters version (0 before any was bumped)."""
        value = self.client.hget(self.keys.meter_versions, org)
        return int(value) if value is not None else 0

    def bump(self, org: str) -> int:
        """A new version for ``org``: call after a meter is committed."""
        return int(self.client.hincrby(self.keys.meter_versions, org, 1))
