"""Replay dead letters through ingest, e.g. after the missing entitlement was created.

Replay is idempotent: an event that is counted is protected by its dedupe
marker, so replaying twice (or from two places at once) counts it once. A
letter is marked replayed when its event was counted, was already counted,
or failed for another reason (that failure is a new letter); a letter whose
event fails for the same reason again stays listed.

A replayed raw event feeds every meter of its type that exists at the replay,
also those created after its time (a sent event does not: a meter starts at its
creation). A dead letter is an event never fully counted, and its replay is an
operator's explicit act, so an event dead-lettered because no meter read its
type counts once the meter exists; the items counted before come back
duplicates.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from typing import Any

from meterd.events import UsageEvent, parse_event, with_time
from meterd.services.ingest import IngestService
from meterd.storage.dead_letters import DeadLetterStore
from meterd.storage.models import DeadLetter


@dataclass(slots=True)
class ReplayReport:
    replayed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    still_dead: int = 0


class DeadLetterReplay:
    def __init__(self, dead_letters: DeadLetterStore, ingest: IngestService) -> None:
        self.dead_letters = dead_letters
        self.ingest = ingest

    def replay(
        self,
        *,
        now: datetime,
        reason: str | None = None,
        org: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> ReplayReport:
        letters = self.dead_letters.find(
            reason=reason, org_id=org, since=since, until=until, limit=limit
        )
        report = ReplayReport(replayed=len(letters))
        settled: dict[uuid.UUID, str] = {}
        # Events that came over HTTP took their org from the API key, not the payload:
        # replay each org's letters under that org.
        for org_id, group in groupby(
            sorted(letters, key=lambda dl: dl.org_id or ""), key=lambda dl: dl.org_id
        ):
            batch = list(group)
            result = self.ingest.ingest(
                [_timed(dl) for dl in batch], now=now, org=org_id, replay=True
            )
            for letter, outcome in zip(batch, result.outcomes, strict=True):
                report.outcomes[outcome.value] += 1
                if outcome.value == letter.reason:
                    report.still_dead += 1
                else:
                    settled[letter.id] = outcome.value
        self.dead_letters.mark_replayed(settled, now)
        return report


def _timed(letter: DeadLetter) -> Any:
    """The letter's event, timed when it was received if it carried no time (letters
    stored before ingest stamped them): a replay never re-times an event. A payload
    that is no valid event is replayed as it was."""
    payload = json.loads(letter.payload)
    parsed = parse_event(payload, received_at=letter.received_at, org=letter.org_id)
    return with_time(payload, parsed) if isinstance(parsed, UsageEvent) else payload
