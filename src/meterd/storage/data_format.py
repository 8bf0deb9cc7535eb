"""Which version of meterd's data format the counter Redis holds, and whether this
code can take it over (docs/architecture.md, "Upgrading in place").

Counts not yet flushed, records of events waiting for the event log, dedupe
markers and cached resolution entries live in Redis between two versions of
meterd: an upgrade in place stops the old workers and starts the new ones on the
same Redis. The new code must read what the old one wrote, or the upgrade must
wait until that data is gone (a drained flush).

``P:format`` holds the format's version. A worker, beat or API process calls
``claim`` at start: if the stored format is one this code reads (``READS``), it
writes its own (``WRITES``) and starts; if not, it starts only when nothing of
the old format waits (no unflushed counts, no waiting records, no flush in
flight, no dedupe markers) and refuses otherwise, with what to do.
``meterd status`` shows the same verdict (``inspect``) before anything starts.

Format 1 is what every version before this key wrote (b6213b7, the code of
2026-12-06, and everything up to the key): a Redis with meterd's data and no
``P:format`` holds format 1. A change of encoding (markers, records, resolution
entries, counters) bumps ``WRITES``; it keeps the old version in ``READS`` when
the new code reads the old encoding in place (then an upgrade needs no drain),
and drops it when it does not (then ``meterd status`` says a drain is needed and
the new code refuses to start until it was done).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from redis.exceptions import OutOfMemoryError

from meterd.core.errors import ConflictError
from meterd.core.redis_keys import RedisKeys

#: The format this code writes.
WRITES = 1
#: The formats this code reads in place (an upgrade from them needs no drain).
READS: frozenset[int] = frozenset({1})
#: The format of data written before the format key existed.
UNVERSIONED = 1


@dataclass(frozen=True, slots=True)
class DataFormat:
    """The counter Redis's data format as this code sees it."""

    #: The stored version (``UNVERSIONED`` when no key holds one); None when the
    #: key holds something that is not a version.
    stored: int | None
    #: Whether ``P:format`` exists (a Redis of older versions or a new one has none).
    recorded: bool
    #: The format this code writes and those it reads (``WRITES``, ``READS``).
    writes: int
    reads: tuple[int, ...]
    #: What of the stored format waits in Redis, by kind (only the non-zero ones).
    waiting: dict[str, int] = field(default_factory=dict)

    @property
    def readable(self) -> bool:
        return self.stored in self.reads

    @property
    def drain_needed(self) -> bool:
        """This code cannot start on the Redis until the version that wrote it drained it."""
        return not self.readable and bool(self.waiting)

    def describe(self) -> str:
        stored = "unreadable" if self.stored is None else str(self.stored)
        reads = ", ".join(map(str, self.reads))
        verdict = (
            "readable"
            if self.readable
            else "drain needed"
            if self.drain_needed
            else "not readable, nothing waits"
        )
        return f"format {stored} ({verdict}; this version writes {self.writes}, reads {reads})"

    def refusal(self) -> str:
        """What an operator reads when a process refuses to start."""
        waits = ", ".join(f"{n:,} {kind}" for kind, n in self.waiting.items())
        if self.stored is None:
            by = "a version this one does not know"
        elif self.stored > self.writes:
            by = "a newer meterd (downgrading over waiting data is not supported)"
        else:
            by = "an older meterd this version does not read"
        return (
            f"the counter Redis holds meterd data {self.describe()}, written by {by}; "
            f"waiting in it: {waits}. Drain it with the version that wrote it: stop the "
            "producers, let its workers empty the queues, run its `meterd flush` until "
            "`meterd status` shows nothing waiting for the flush, and let its dedupe "
            "markers expire (METERD_DEDUPE_TTL after the last event); then start this version"
        )


class DataFormatError(ConflictError):
    """The counter Redis holds data this version cannot read: it does not start."""

    def __init__(self, state: DataFormat) -> None:
        super().__init__(state.refusal())
        self.state = state


def inspect(
    client: redis.Redis,
    keys: RedisKeys,
    *,
    writes: int | None = None,
    reads: frozenset[int] | None = None,
) -> DataFormat:
    """Read the stored version and what waits in Redis (a few O(1) reads), against
    this code's ``WRITES`` and ``READS`` (or those given: another version's)."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.data_format)
    pipe.hlen(keys.pending)
    pipe.hlen(keys.pending_events)
    pipe.exists(keys.flush_inflight, keys.flush_batch, keys.flush_events)
    pipe.zcard(keys.marker_generations)
    raw, counts, records, in_flight, markers = pipe.execute()
    stored: int | None
    if raw is None:
        stored = UNVERSIONED
    else:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        stored = int(text) if text.isdigit() else None
    waiting = {
        "unflushed counts": int(counts),
        "events waiting for the log": int(records),
        "flush batches in flight": int(in_flight),
        "dedupe marker generations": int(markers),
    }
    return DataFormat(
        stored,
        raw is not None,
        WRITES if writes is None else writes,
        tuple(sorted(READS if reads is None else reads)),
        waiting={k: n for k, n in waiting.items() if n},
    )


def claim(
    client: redis.Redis,
    keys: RedisKeys,
    *,
    writes: int | None = None,
    reads: frozenset[int] | None = None,
) -> DataFormat:
    """At the start of a worker, beat or API process: raise ``DataFormatError`` when
    this code cannot take the Redis over; else record its own format (the stored one
    raised, never lowered by a version that reads it) and return what it found."""
    state = inspect(client, keys, writes=writes, reads=reads)
    if state.drain_needed:
        raise DataFormatError(state)
    older = state.stored is None or state.stored < state.writes
    if not state.recorded or not state.readable or older:
        try:
            client.set(keys.data_format, state.writes)
        except OutOfMemoryError:
            # A full Redis (noeviction) refuses the write. Starting anyway is safe only
            # if the format it holds is this code's already (recorded at a later start).
            if state.stored != state.writes:
                raise
    return state
