"""An accepted event as the event log keeps it, and its form while it waits in Redis.

``ingest.lua`` stores the record of every event it accepts in the pending events
hash, in the same atomic step as its counts, as
``<quantity>:<target>\\t<JSON>\\t<field>=<micros>,...``: the JSON is written here
before the script runs; the script adds where it counted the event (one
``<entitlement hex>:<period start us>`` field per entitlement the burn-down
touched). The flush reads the records of its batch and writes them to the log
in the transaction that adds the counts, so the log and the counters hold the
same events.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from meterd.core.timeutil import epoch_micros, from_epoch_micros

#: Marker digests are integers below 2^52 (exact in Lua's doubles).
MARKER_BITS = 52


@dataclass(frozen=True, slots=True)
class Allocation:
    """The part of an event counted on one period of one entitlement: integer units
    of the feature's scale (negative when a LATEST level fell; zero when the event
    moved no counter)."""

    entitlement_id: uuid.UUID
    period_start: datetime
    units: int


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One accepted event, with where it was counted."""

    org: str
    source: str
    id: str
    customer: str
    feature: str
    time: datetime
    #: The event's value in integer units of its feature's ``scale``.
    units: int
    scale: int
    #: The entitlement the event asked for (``data.entitlement_id``), if any.
    target: uuid.UUID | None
    #: When a worker accepted it.
    received_at: datetime
    data: Mapping[str, Any]
    allocations: tuple[Allocation, ...]


def event_key(org: str, source: str, event_id: str) -> str:
    """An event's dedupe identity: org ids have no colon and the source is
    length-prefixed, so two different events never share a key."""
    return f"{org}:{len(source)}:{source}:{event_id}"


def split_event_key(key: str) -> tuple[str, str, str]:
    org, rest = key.split(":", 1)
    length, rest = rest.split(":", 1)
    n = int(length)
    return org, rest[:n], rest[n + 1 :]


def marker_digest(key: str, bits: int = MARKER_BITS) -> int:
    """The marker of an event key: ``bits`` bits of BLAKE2b. Fewer bits only make
    collisions likelier, which costs a log search, never a count (tests use 3)."""
    digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return digest >> (64 - bits)


def record_json(
    customer: str,
    feature: str,
    time: datetime,
    received_at: datetime,
    data: Mapping[str, Any],
    scale: int = 6,
) -> str:
    """The JSON part of a pending record (no tab or newline: JSON escapes them)."""
    return json.dumps(
        {
            "c": customer,
            "f": feature,
            "t": epoch_micros(time),
            "r": epoch_micros(received_at),
            "k": scale,
            "d": data,
        },
        separators=(",", ":"),
    )


def parse_pending_record(key: str, record: str) -> EventRecord:
    """An ``EventRecord`` from a pending events field and value."""
    signature, body, allocations = record.split("\t", 2)
    quantity, target = signature.split(":", 1)
    fields = json.loads(body)
    org, source, event_id = split_event_key(key)
    parts = []
    for item in allocations.split(",") if allocations else ():
        field, units = item.split("=", 1)
        ent_hex, start = field.split(":", 1)
        parts.append(Allocation(uuid.UUID(hex=ent_hex), from_epoch_micros(int(start)), int(units)))
    return EventRecord(
        org=org,
        source=source,
        id=event_id,
        customer=fields["c"],
        feature=fields["f"],
        time=from_epoch_micros(int(fields["t"])),
        units=int(quantity),
        scale=int(fields.get("k", 6)),
        target=uuid.UUID(hex=target) if target else None,
        received_at=from_epoch_micros(int(fields["r"])),
        data=fields["d"],
        allocations=tuple(parts),
    )
