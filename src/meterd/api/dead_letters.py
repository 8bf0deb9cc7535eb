"""Dead letters of the caller's org: the events that were not counted, with why.

List them (oldest first, by opaque cursor), show one, and replay one or several
through ingest again. Replay is idempotent (an event already counted comes back
``duplicate``), so calling it twice, or beside ``meterd dlq replay``, counts
nothing twice. A letter of another org is answered exactly like one that does
not exist (404). The key that sends the org's events (``EVENTS:WRITE``) sees
which of them did not count and sends them again.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from meterd.api.auth import RuntimeDep, require
from meterd.api.exact_json import ExactJSONRoute
from meterd.api.inputs import RequestBody
from meterd.core.paging import Cursor, decode, encode
from meterd.core.timeutil import isoformat, isoformat_or_none, utcnow
from meterd.services.api_keys import Permission, Principal
from meterd.services.replay import ReplayReport
from meterd.services.values import DeadLetter

router = APIRouter(prefix="/v1", tags=["dead letters"], route_class=ExactJSONRoute)

Sender = Annotated[Principal, Depends(require(Permission.EVENTS_WRITE))]
#: Letters replayed in one call, at most.
MAX_REPLAY = 500
_SORT = "received_at:asc"


class DeadLetterOut(BaseModel):
    id: uuid.UUID
    reason: str = Field(description="why it was not counted, e.g. no_entitlement, invalid")
    detail: str
    source: str | None
    event_id: str | None
    received_at: str
    replayed_at: str | None
    replay_outcome: str | None
    payload: Any = Field(description="the event as it was received")


class DeadLetterPage(BaseModel):
    data: list[DeadLetterOut]
    next: str | None = Field(description="the cursor of the next page; null: the last page")


class ReplayIn(RequestBody):
    ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_REPLAY)


class ReplayOneIn(RequestBody):
    """No fields (yet): an unknown one is refused, as on every write route."""


class ReplayOut(BaseModel):
    replayed: int = Field(description="letters fed through ingest again")
    still_dead: int = Field(description="failed again for the same reason: still listed")
    outcomes: dict[str, int] = Field(description="how many came back with each outcome")


def letter_out(letter: DeadLetter) -> DeadLetterOut:
    return DeadLetterOut(
        id=letter.id,
        reason=letter.reason,
        detail=letter.detail,
        source=letter.source,
        event_id=letter.event_id,
        received_at=isoformat(letter.received_at),
        replayed_at=isoformat_or_none(letter.replayed_at),
        replay_outcome=letter.replay_outcome,
        payload=json.loads(letter.payload),
    )


def replay_out(report: ReplayReport) -> ReplayOut:
    return ReplayOut(
        replayed=report.replayed, still_dead=report.still_dead, outcomes=dict(report.outcomes)
    )


@router.get("/dead-letters", response_model=DeadLetterPage)
def list_dead_letters(
    runtime: RuntimeDep,
    caller: Sender,
    cursor: Annotated[
        str | None, Query(max_length=2000, description="a next value this route gave")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeadLetterPage:
    """The org's letters not yet replayed, oldest first."""
    after = None
    if cursor:
        boundary = decode(cursor, _SORT, datetime)
        after = (boundary.value, uuid.UUID(boundary.row_id))
    letters = runtime.replay.page(caller.org, after=after, limit=limit + 1)
    shown = letters[:limit]
    more = len(letters) > limit
    last = shown[-1] if shown else None
    next_cursor = (
        encode(Cursor(_SORT, last.received_at, str(last.id), True)) if more and last else None
    )
    return DeadLetterPage(data=[letter_out(dl) for dl in shown], next=next_cursor)


@router.get("/dead-letters/{dead_letter_id}", response_model=DeadLetterOut)
def get_dead_letter(
    dead_letter_id: uuid.UUID, runtime: RuntimeDep, caller: Sender
) -> DeadLetterOut:
    return letter_out(runtime.replay.get(dead_letter_id, caller.org))


@router.post("/dead-letters/{dead_letter_id}/replay", response_model=ReplayOut)
def replay_dead_letter(
    dead_letter_id: uuid.UUID,
    runtime: RuntimeDep,
    caller: Sender,
    body: ReplayOneIn | None = None,
) -> ReplayOut:
    """Feed one letter through ingest again (404 if the org has no such letter; a
    letter already replayed is not replayed again: ``replayed`` 0)."""
    runtime.replay.get(dead_letter_id, caller.org)
    return replay_out(runtime.replay.replay_ids([dead_letter_id], now=utcnow(), org=caller.org))


@router.post("/dead-letters/replay", response_model=ReplayOut)
def replay_dead_letters(body: ReplayIn, runtime: RuntimeDep, caller: Sender) -> ReplayOut:
    """Feed the org's letters of ``ids`` through ingest again; ids of no letter of
    the org, or of letters already replayed, are skipped."""
    return replay_out(runtime.replay.replay_ids(body.ids, now=utcnow(), org=caller.org))
