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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from typing import Any

from meterd.core.errors import NotFoundError
from meterd.core.event_parsing import parse_event
from meterd.core.events import UsageEvent, with_time
from meterd.services.ingest import IngestService
from meterd.services.values import DeadLetter
from meterd.storage.dead_letters import DeadLetterStore
from meterd.storage.models import DeadLetter as DeadLetterRow


@dataclass(slots=True)
class ReplayReport:
    replayed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    still_dead: int = 0


class DeadLetterReplay:
    """Dead letters for the edges: find, page, show, count, purge and replay them
    (the store stays behind this service)."""

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
        return self._replay(letters, now)

    def replay_ids(
        self, ids: Sequence[uuid.UUID], *, now: datetime, org: str | None
    ) -> ReplayReport:
        """Replay the letters of ``ids`` not yet replayed (of ``org`` only, if given);
        an id that names none is skipped."""
        letters = [dl for dl in self.dead_letters.by_ids(ids, org) if dl.replayed_at is None]
        return self._replay(letters, now)

    def _replay(self, letters: list[DeadLetterRow], now: datetime) -> ReplayReport:
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

    def find(
        self,
        *,
        reason: str | None = None,
        org: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[DeadLetter]:
        """Letters not yet replayed, oldest first."""
        found = self.dead_letters.find(
            reason=reason, org_id=org, since=since, until=until, limit=limit
        )
        return [DeadLetter.from_row(row) for row in found]

    def page(
        self, org: str, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[DeadLetter]:
        """The org's letters not yet replayed, oldest first, after ``after``."""
        return [
            DeadLetter.from_row(row)
            for row in self.dead_letters.page(org, after=after, limit=limit)
        ]

    def get(self, dead_letter_id: uuid.UUID, org: str | None = None) -> DeadLetter:
        """One letter (of ``org``, if given): ``NotFoundError`` otherwise."""
        letter = self.dead_letters.get(dead_letter_id)
        if letter is None or (org is not None and letter.org_id != org):
            raise NotFoundError("dead letter", str(dead_letter_id))
        return DeadLetter.from_row(letter)

    def ids(self, org: str | None = None) -> list[uuid.UUID]:
        return self.dead_letters.ids(org)

    def count(self, **filters: Any) -> int:
        return self.dead_letters.count(**filters)

    def purge(self, **filters: Any) -> int:
        """Delete matching letters (see ``DeadLetterStore.purge``); how many."""
        return self.dead_letters.purge(**filters)


def _timed(letter: DeadLetterRow) -> Any:
    """The letter's event, timed when it was received if it carried no time (letters
    stored before ingest stamped them): a replay never re-times an event. A payload
    that is no valid event is replayed as it was."""
    payload = json.loads(letter.payload)
    parsed = parse_event(payload, received_at=letter.received_at, org=letter.org_id)
    return with_time(payload, parsed) if isinstance(parsed, UsageEvent) else payload
