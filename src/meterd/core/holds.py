"""Holds: units reserved now for work whose size is known only afterwards.

A hold is a reservation whose units are *held* rather than consumed: they take
room from every later reserve, hold and burn-down at once, and only what is
settled is usage. Its state is a function of time: a hold not settled or
released by ``expires_at`` is expired from that instant, whether or not anything
ran then (``ingest/holds.lua`` frees it in the same atomic step as any read or
count of its customer). docs/holds.md is the user's page.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from meterd.core.timeutil import epoch_micros, from_epoch_micros

#: The source of a settled hold's usage event (its id is the hold's id).
HOLD_SOURCE = "meterd.hold"
MIN_HOLD_SECONDS = 1
#: A day: a hold is a bet on work in flight, not a second balance.
MAX_HOLD_SECONDS = 86_400
_NAMESPACE = uuid.UUID("6f1d3a2e-5b0c-4f43-9a1e-2d7c0b9e8a41")


class HoldStatus(StrEnum):
    HELD = "held"
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"


def hold_id_for(org: str, reservation_id: str) -> uuid.UUID:
    """The id of the hold a reservation key makes (the same key, the same hold: a
    retried reserve finds it)."""
    return uuid.uuid5(_NAMESPACE, f"{len(org)}:{org}:{reservation_id}")


@dataclass(frozen=True, slots=True)
class HoldOp:
    """What an event does to a hold: ``hold`` (its units are held until
    ``expires_at``) or ``settle`` (it is the settled usage of hold ``hold_id``)."""

    kind: Literal["hold", "settle"]
    hold_id: uuid.UUID
    expires_at: datetime | None = None
    #: The hold's meta (``HoldMeta.encode``), stored with a new hold.
    meta: str = ""
    #: The most live holds the customer may keep (a new hold past it is refused).
    max_live: int = 0


@dataclass(frozen=True, slots=True)
class HoldMeta:
    """What settling a hold needs to count its usage like the reservation's: who,
    what, when (the hold's time decides the period), and the reservation's data."""

    org: str
    customer: str
    feature: str
    scale: int
    time: datetime
    target: uuid.UUID | None
    data: dict[str, Any]
    idempotency_key: str

    def encode(self) -> str:
        return json.dumps(
            {
                "o": self.org,
                "c": self.customer,
                "f": self.feature,
                "s": self.scale,
                "t": epoch_micros(self.time),
                "x": self.target.hex if self.target else None,
                "d": self.data,
                "k": self.idempotency_key,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def decode(cls, text: str) -> HoldMeta:
        raw = json.loads(text)
        return cls(
            org=raw["o"],
            customer=raw["c"],
            feature=raw["f"],
            scale=int(raw["s"]),
            time=from_epoch_micros(int(raw["t"])),
            target=uuid.UUID(hex=raw["x"]) if raw["x"] else None,
            data=raw["d"],
            idempotency_key=raw["k"],
        )


def status_at(stored: HoldStatus, expires_at: datetime, now: datetime) -> HoldStatus:
    """The status at ``now``: a hold still recorded as held is expired from its
    expiry on (by time alone)."""
    if stored is HoldStatus.HELD and now >= expires_at:
        return HoldStatus.EXPIRED
    return stored
