"""Ingest: validate a batch of usage events, count the valid ones, dead-letter the rest.

One bad event never blocks its batch: validation happens per event, counting
is one atomic script call per chunk, and every event gets an outcome. The
counts are written before the dead letters, so a crash between the two only
repeats the dead-lettering on redelivery (dead letters are idempotent by
fingerprint and the counted events come back as duplicates).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from meterd.domain import Outcome
from meterd.events import (
    InvalidEvent,
    UsageEvent,
    dead_letter_payload,
    parse_event,
    time_verdict,
    with_time,
)
from meterd.services.counting import UsageCounter
from meterd.storage.counters import ScriptCode
from meterd.storage.dead_letters import DeadLetterRecord, DeadLetterStore

#: The outcome of each code a (non-strict) count can answer.
OUTCOMES: dict[ScriptCode, Outcome] = {
    ScriptCode.ACCEPTED: Outcome.ACCEPTED,
    ScriptCode.DUPLICATE: Outcome.DUPLICATE,
    ScriptCode.NO_ENTITLEMENT: Outcome.NO_ENTITLEMENT,
    ScriptCode.LATE: Outcome.LATE,
    ScriptCode.SUSPENDED: Outcome.SUSPENDED,
}


@dataclass(slots=True)
class IngestReport:
    """The outcome of every event of a batch, in input order."""

    outcomes: list[Outcome]
    reasons: list[str | None]
    dead_lettered: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    #: The outcomes decided outside the script (invalid, events judged by their
    #: time, duplicates found in the event log), which the caller adds to the
    #: stats; the script counts the others in the step that decides them.
    decided_before_counting: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.counts = Counter(o.value for o in self.outcomes)


class IngestService:
    def __init__(
        self,
        counting: UsageCounter,
        dead_letters: DeadLetterStore,
        *,
        chunk_size: int,
        late_window: timedelta,
        future_skew: timedelta,
    ) -> None:
        self.counting = counting
        self.dead_letters = dead_letters
        self.chunk_size = chunk_size
        self.late_window = late_window
        self.future_skew = future_skew

    def ingest(
        self, payloads: Sequence[Any], *, now: datetime, org: str | None = None
    ) -> IngestReport:
        outcomes: list[Outcome | None] = [None] * len(payloads)
        reasons: list[str | None] = [None] * len(payloads)
        valid: list[tuple[int, UsageEvent]] = []
        for index, payload in enumerate(payloads):
            parsed = parse_event(payload, received_at=now, org=org)
            if isinstance(parsed, InvalidEvent):
                outcomes[index], reasons[index] = Outcome.INVALID, parsed.reason
                continue
            verdict = time_verdict(
                parsed, now, future_skew=self.future_skew, late_window=self.late_window
            )
            if verdict is not None:
                outcomes[index], reasons[index] = verdict
            valid.append((index, parsed))

        early = list(outcomes)
        from_log: Counter[str] = Counter()
        countable = [(i, event) for i, event in valid if outcomes[i] is None]
        for start in range(0, len(countable), self.chunk_size):
            chunk = countable[start : start + self.chunk_size]
            self._count(chunk, outcomes, reasons, now, from_log)

        final = [o if o is not None else Outcome.INVALID for o in outcomes]
        by_index = dict(valid)
        dead = [
            _dead_letter(payloads[i], final[i], reasons[i], by_index.get(i), org)
            for i in range(len(payloads))
            if final[i].is_dead_letter
        ]
        report = IngestReport(outcomes=final, reasons=reasons)
        report.decided_before_counting = Counter(o.value for o in early if o is not None) + from_log
        report.dead_lettered = self.dead_letters.add(dead, now) if dead else 0
        return report

    def _count(
        self,
        chunk: list[tuple[int, UsageEvent]],
        outcomes: list[Outcome | None],
        reasons: list[str | None],
        now: datetime,
        from_log: Counter[str],
    ) -> None:
        decided: list[int] = []
        codes = self.counting.count([event for _, event in chunk], now, decided_by_log=decided)
        from_log.update(OUTCOMES[codes[i]].value for i in decided)
        for (index, event), code in zip(chunk, codes, strict=True):
            outcome = OUTCOMES[code]
            outcomes[index] = outcome
            reasons[index] = self._reason(outcome, event)

    def _reason(self, outcome: Outcome, event: UsageEvent) -> str | None:
        if outcome is Outcome.NO_ENTITLEMENT:
            return (
                f"customer {event.customer!r} has no usable entitlement for feature "
                f"{event.feature!r} at {event.time.isoformat()}"
            )
        if outcome is Outcome.LATE:
            days = self.late_window.total_seconds() / 86400
            return (
                f"event time {event.time.isoformat()} is older than the late window ({days:g} days)"
            )
        if outcome is Outcome.SUSPENDED:
            return (
                f"the entitlement of customer {event.customer!r} for {event.feature!r} is suspended"
            )
        return None


def _dead_letter(
    payload: Any,
    outcome: Outcome,
    reason: str | None,
    event: UsageEvent | None,
    org: str | None,
) -> DeadLetterRecord:
    return DeadLetterRecord(
        reason=outcome.value,
        detail=reason or outcome.value,
        # Timed as received, so a replay judges it by when it happened; an event
        # refused for its shape (too deep, too large) is kept as a stand-in.
        payload=with_time(payload, event) if event is not None else dead_letter_payload(payload),
        org_id=event.org if event else (org or _maybe_str(payload, "org")),
        source=event.source if event else None,
        event_id=event.id if event else None,
    )


def _maybe_str(payload: Any, key: str) -> str | None:
    if isinstance(payload, dict):
        value = payload.get(key)
        if isinstance(value, str) and len(value) <= 64:
            return value
    return None
