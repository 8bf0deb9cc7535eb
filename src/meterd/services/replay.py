"""Replay dead letters through ingest, e.g. after the missing entitlement was created.

Replay is idempotent: an event that is counted is protected by its dedupe
marker, so replaying twice (or from two places at once) counts it once. A
letter is marked replayed when its event was counted, was already counted,
or failed for another reason (that failure is a new letter); a letter whose
event fails for the same reason again stays listed.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby

from meterd.services.ingest import IngestService
from meterd.storage.dead_letters import DeadLetterStore


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
                [json.loads(dl.payload) for dl in batch], now=now, org=org_id
            )
            for letter, outcome in zip(batch, result.outcomes, strict=True):
                report.outcomes[outcome.value] += 1
                if outcome.value == letter.reason:
                    report.still_dead += 1
                else:
                    settled[letter.id] = outcome.value
        self.dead_letters.mark_replayed(settled, now)
        return report
