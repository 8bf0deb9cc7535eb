"""Counting events with the ingest script, loading resolution data it finds missing.

``ingest.lua`` routes each event with the customer's resolution data cached in
Redis. When that data is not cached (first sight of a customer, or expired)
the script writes nothing for the event and answers ``MISSING_RESOLUTION``;
the data is then loaded from the database and only those events are counted
again. When the script cannot rule out that an event was accepted before (its
marker may have expired, or the marker it hit belongs to an event already
flushed) it answers ``CONFIRM``: the event log is searched and the events not
in it are counted in a confirmed call. Ingest and reserve both count through
``UsageCounter``, the one owner of those loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from meterd.core.errors import UnavailableError
from meterd.core.events import UsageEvent
from meterd.services.resolution import ResolutionCache
from meterd.storage.counters import CounterStore, ScriptCode
from meterd.storage.event_log import EventLog, LoggedEvent

#: Loading and counting again more than this many times means the data is being
#: evicted or replaced as fast as it is loaded: give up for now (the caller retries).
MAX_RESOLUTION_ROUNDS = 3
#: Searching the log again more than this many times means flushes keep moving
#: events under the search: give up for now (the caller retries).
MAX_CONFIRM_ROUNDS = 5


#: Codes ``UsageCounter.count`` resolves itself: its callers never see them.
NOT_FINAL = frozenset(
    {
        ScriptCode.MISSING_RESOLUTION,
        ScriptCode.CONFIRM,
        ScriptCode.RETRY,
        ScriptCode.BACKPRESSURE,  # raised as BackpressureError
    }
)


class ResolutionUnavailableError(UnavailableError):
    """Resolution data kept disappearing from Redis while counting; retry later."""


class BackpressureError(UnavailableError):
    """Too many accepted events wait for a flush (the database is down or slow):
    ingest refuses more until the flush catches up; the broker keeps them."""


class ConfirmUnavailableError(UnavailableError):
    """Flushes kept moving events while the log was searched; retry later."""


class UsageCounter:
    """Counts events through ``ingest.lua``: loads missing resolution data, and
    searches the event log for events whose marker may be gone (see ingest.lua's
    header for the two-tier dedupe), so every event ends with a final code."""

    def __init__(self, counters: CounterStore, resolution: ResolutionCache, log: EventLog) -> None:
        self.counters = counters
        self.resolution = resolution
        self.log = log

    def count(
        self,
        events: Sequence[UsageEvent],
        now: datetime,
        *,
        strict: bool = False,
        decided_by_log: list[int] | None = None,
    ) -> list[ScriptCode]:
        """The code of each event (never MISSING_RESOLUTION, CONFIRM or RETRY), in
        input order. ``decided_by_log`` gets the indices whose code the log search
        decided (the script's stats do not count those)."""
        codes: list[ScriptCode] = [ScriptCode.CONFIRM] * len(events)
        confirm = self._count(events, list(range(len(events))), codes, now, strict, None)
        for _ in range(MAX_CONFIRM_ROUNDS):
            if not confirm:
                return codes
            seq = self.counters.flush_seq()
            found = self.log.find(
                [(events[i].org, events[i].source, events[i].id) for i in confirm]
            )
            unseen = []
            for i in confirm:
                logged = found.get((events[i].org, events[i].source, events[i].id))
                if logged is None:
                    unseen.append(i)
                else:
                    codes[i] = self._logged_code(events[i], logged, strict)
                    if decided_by_log is not None:
                        decided_by_log.append(i)
            confirm = self._count(events, unseen, codes, now, strict, seq)
        if confirm:
            raise ConfirmUnavailableError("flushes kept moving events during the log search")
        return codes

    @staticmethod
    def _logged_code(event: UsageEvent, logged: LoggedEvent, strict: bool) -> ScriptCode:
        if strict and (logged.quantity != event.quantity or logged.target != event.entitlement_id):
            return ScriptCode.CONFLICT
        return ScriptCode.DUPLICATE

    def _count(
        self,
        events: Sequence[UsageEvent],
        todo: list[int],
        codes: list[ScriptCode],
        now: datetime,
        strict: bool,
        seq: int | None,
    ) -> list[int]:
        """Count ``todo``; returns the indices to search the log for (again)."""
        confirm: list[int] = []
        for _ in range(MAX_RESOLUTION_ROUNDS):
            if not todo:
                return confirm
            answered = self.counters.add_batch(
                [events[i] for i in todo], now=now, strict=strict, confirmed_seq=seq
            )
            missed = []
            for index, code in zip(todo, answered, strict=True):
                if code is ScriptCode.MISSING_RESOLUTION:
                    missed.append(index)
                elif code in (ScriptCode.CONFIRM, ScriptCode.RETRY):
                    confirm.append(index)
                elif code is ScriptCode.BACKPRESSURE:
                    raise BackpressureError(
                        "too many accepted events wait for a flush (is the database down?); "
                        "retry later"
                    )
                else:
                    codes[index] = code
            if missed:
                self.resolution.fill(
                    {(events[i].org, events[i].customer, events[i].feature) for i in missed}, now
                )
            todo = missed
        raise ResolutionUnavailableError(
            "resolution data kept disappearing from Redis; retry the batch"
        )
