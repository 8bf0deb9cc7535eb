"""Counting events with the ingest script, loading resolution data it finds missing.

``ingest.lua`` routes each event with the customer's resolution data cached in
Redis. When that data is not cached (first sight of a customer, or expired)
the script writes nothing for the event and answers ``MISSING_RESOLUTION``;
the data is then loaded from the database and only those events are counted
again. Ingest and reserve both count through ``UsageCounter``, the one owner
of that loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from meterd.errors import UnavailableError
from meterd.events import UsageEvent
from meterd.services.resolution import ResolutionCache
from meterd.storage.counters import CounterStore, ScriptCode

#: Loading and counting again more than this many times means the data is being
#: evicted or replaced as fast as it is loaded: give up for now (the caller retries).
MAX_RESOLUTION_ROUNDS = 3


class ResolutionUnavailableError(UnavailableError):
    """Resolution data kept disappearing from Redis while counting; retry later."""


class UsageCounter:
    def __init__(self, counters: CounterStore, resolution: ResolutionCache) -> None:
        self.counters = counters
        self.resolution = resolution

    def count(
        self, events: Sequence[UsageEvent], now: datetime, *, strict: bool = False
    ) -> list[ScriptCode]:
        """The code of each event (never ``MISSING_RESOLUTION``), in input order."""
        codes: list[ScriptCode] = [ScriptCode.MISSING_RESOLUTION] * len(events)
        todo = list(range(len(events)))
        for _ in range(MAX_RESOLUTION_ROUNDS):
            answered = self.counters.add_batch([events[i] for i in todo], now=now, strict=strict)
            missed = []
            for index, code in zip(todo, answered, strict=True):
                if code is ScriptCode.MISSING_RESOLUTION:
                    missed.append(index)
                else:
                    codes[index] = code
            if not missed:
                return codes
            self.resolution.fill(
                {(events[i].org, events[i].customer, events[i].feature) for i in missed}, now
            )
            todo = missed
        raise ResolutionUnavailableError(
            "resolution data kept disappearing from Redis; retry the batch"
        )
