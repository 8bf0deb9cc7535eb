"""Ingest: validate a batch of events, count the valid ones, dead-letter the rest.

One bad event never blocks its batch: validation happens per event, counting
is one atomic script call per chunk, and every event gets an outcome. An event
is counted as the items it feeds its features with (``services/meters.py``:
one for a usage event, one per matching meter for a raw event); its outcome
is combined from its items' (``combined_outcome``). The counts are written
before the dead letters, so a crash between the two only repeats the
dead-lettering on redelivery (dead letters are idempotent by fingerprint and
the counted items come back as duplicates).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from meterd.core.domain import Outcome
from meterd.core.event_parsing import parse_event
from meterd.core.events import (
    InvalidEvent,
    RawEvent,
    UsageEvent,
    dead_letter_payload,
    time_verdict,
    with_time,
)
from meterd.services.counting import UsageCounter
from meterd.services.meters import (
    ItemResult,
    MeterCatalog,
    OrgMeters,
    combined_outcome,
    items_of,
)
from meterd.storage.counters import ScriptCode
from meterd.storage.dead_letters import DeadLetterRecord, DeadLetterStore

#: The outcome of each code a (non-strict) count can answer.
OUTCOMES: dict[ScriptCode, Outcome] = {
    ScriptCode.ACCEPTED: Outcome.ACCEPTED,
    ScriptCode.DUPLICATE: Outcome.DUPLICATE,
    ScriptCode.NO_ENTITLEMENT: Outcome.NO_ENTITLEMENT,
    ScriptCode.LATE: Outcome.LATE,
    ScriptCode.SUSPENDED: Outcome.SUSPENDED,
    ScriptCode.OUT_OF_RANGE: Outcome.INVALID,
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
        self.counts = Counter({o.value: n for o, n in Counter(self.outcomes).items()})


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Items counted in one script call, and the index of the event of each."""

    items: list[UsageEvent]
    events: list[int]


#: The outcomes of events that are not dead-lettered (``Outcome.is_dead_letter``).
_NOT_DEAD_LETTERS = frozenset(o for o in Outcome if not o.is_dead_letter)


class IngestService:
    def __init__(
        self,
        counting: UsageCounter,
        dead_letters: DeadLetterStore,
        meters: MeterCatalog,
        *,
        chunk_size: int,
        late_window: timedelta,
        future_skew: timedelta,
    ) -> None:
        self.counting = counting
        self.dead_letters = dead_letters
        self.meters = meters
        self.chunk_size = chunk_size
        self.late_window = late_window
        self.future_skew = future_skew

    def ingest(
        self,
        payloads: Sequence[Any],
        *,
        now: datetime,
        org: str | None = None,
        replay: bool = False,
    ) -> IngestReport:
        """Count ``payloads`` (each gets an outcome). A raw event feeds the meters of
        its type created by its time; ``replay`` (an operator's replay of dead
        letters, ``services.replay``) feeds every meter of its type that exists
        now. The org's meters come from the catalog: a list kept from before is
        used while the database does not answer, unless a meter may have been
        created since or an event names a feature or type it lacks (then the
        store's error is raised and the batch is retried)."""
        n = len(payloads)
        outcomes: list[Outcome | None] = [None] * n
        reasons: list[str | None] = [None] * n
        parsed_at: list[UsageEvent | RawEvent | None] = [None] * n
        #: per event of more than one item: the outcome and reason of each item (an
        #: event of one item takes its item's outcome and reason directly)
        results: dict[int, list[tuple[Outcome, str | None, str]]] = {}
        #: the items to count, and the index of the event of each
        items: list[UsageEvent] = []
        item_events: list[int] = []
        decided = Counter[str]()
        meters: dict[str, OrgMeters] = {}
        refreshed: set[str] = set()
        latest, earliest = now + self.future_skew, now - self.late_window
        for index, payload in enumerate(payloads):
            parsed = parse_event(payload, received_at=now, org=org)
            if isinstance(parsed, InvalidEvent):
                outcomes[index], reasons[index] = Outcome.INVALID, parsed.reason
                continue
            parsed_at[index] = parsed
            if not earliest <= parsed.time <= latest:  # time_verdict's bounds, at once
                verdict = time_verdict(
                    parsed, now, future_skew=self.future_skew, late_window=self.late_window
                )
                if verdict is not None:
                    outcomes[index], reasons[index] = verdict
                    continue
            org_meters = meters.get(parsed.org)
            if org_meters is None or not org_meters.knows(parsed):
                org_meters = self._org_meters(parsed, meters, refreshed)
            found = items_of(parsed, org_meters, every_meter=replay)
            if len(found) == 1:
                item = found[0]
                if isinstance(item, UsageEvent):
                    items.append(item)
                    item_events.append(index)
                else:  # decided here: counted in ``decided`` with the others below
                    outcomes[index], reasons[index] = item
                continue
            results[index] = _spread(found, index, items, item_events, decided)
        # The outcomes so far were all decided outside the script.
        for outcome, times in Counter(outcomes).items():
            if outcome is not None:
                decided[outcome.value] += times

        for start in range(0, len(items), self.chunk_size):
            end = start + self.chunk_size
            chunk = _Chunk(items[start:end], item_events[start:end])
            self._count(chunk, now, outcomes, reasons, results, decided)
        for index, item_results in results.items():
            outcomes[index], reasons[index] = _combined(item_results)

        final = [o if o is not None else Outcome.INVALID for o in outcomes]
        dead = [
            _dead_letter(payloads[i], outcome, reasons[i], parsed_at[i], org)
            for i, outcome in enumerate(final)
            if outcome not in _NOT_DEAD_LETTERS
        ]
        report = IngestReport(outcomes=final, reasons=reasons)
        report.decided_before_counting = decided
        report.dead_lettered = self.dead_letters.add(dead, now) if dead else 0
        return report

    def _org_meters(
        self, event: UsageEvent | RawEvent, meters: dict[str, OrgMeters], refreshed: set[str]
    ) -> OrgMeters:
        """The meters of the event's org for this batch: read once, and once more if
        the event names a feature or type they lack (created since the list was read;
        at most once a batch)."""
        org_meters = meters.get(event.org)
        if org_meters is None:
            org_meters = meters[event.org] = self.meters.of(event.org)
        if not org_meters.knows(event) and event.org not in refreshed:
            org_meters = meters[event.org] = self.meters.refresh(event.org)
            refreshed.add(event.org)
        return org_meters

    def dead_letter_message(self, record: Any, now: datetime) -> int:
        """Keep a message no task could read (``meterd.message_guard`` made ``record``
        of it: the reason, the raw body, its headers) as an ``invalid`` dead letter.
        Idempotent: the same message is kept once. Returns how many were new."""
        identity = None
        if isinstance(record, dict) and isinstance(record.get("reason"), str):
            detail = f"unreadable message: {record['reason'][:1000]}"
            # One letter per message, whatever headers a redelivery added.
            identity = json.dumps(
                [record.get(key) for key in ("kind", "sha256", "message_id", "queue")],
                default=str,
            )
        else:
            detail = "unreadable message: a dead_letter_message task without a record"
            record = dead_letter_payload({"record": record})
        letter = DeadLetterRecord(
            reason=Outcome.INVALID.value,
            detail=detail,
            payload={"unreadable_message": record},
            identity=identity,
        )
        return self.dead_letters.add([letter], now)

    def _count(
        self,
        chunk: _Chunk,
        now: datetime,
        outcomes: list[Outcome | None],
        reasons: list[str | None],
        results: dict[int, list[tuple[Outcome, str | None, str]]],
        decided: Counter[str],
    ) -> None:
        """Count a chunk of items: the outcome of an event of one item is its item's,
        the items of the others go to ``results``."""
        from_log: list[int] = []
        codes = self.counting.count(chunk.items, now, decided_by_log=from_log)
        decided.update(OUTCOMES[codes[i]].value for i in from_log)
        for item, index, code in zip(chunk.items, chunk.events, codes, strict=True):
            outcome = OUTCOMES[code]
            reason = None if code is ScriptCode.ACCEPTED else self._reason(outcome, item, code)
            parts = results.get(index)
            if parts is None:
                outcomes[index], reasons[index] = outcome, reason
            else:
                parts.append((outcome, reason, item.feature))

    def _reason(self, outcome: Outcome, event: UsageEvent, code: ScriptCode) -> str | None:
        if code is ScriptCode.OUT_OF_RANGE:
            return (
                f"counting {event.quantity} would carry a counter of feature {event.feature!r}"
                " past what it holds exactly (see the bounds of its scale in docs/meters.md)"
            )
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


def _spread(
    found: list[ItemResult],
    index: int,
    items: list[UsageEvent],
    item_events: list[int],
    decided: Counter[str],
) -> list[tuple[Outcome, str | None, str]]:
    """The items of an event of several: those to count go to ``items``; the
    outcomes of the others (decided here, so added to ``decided``) are returned."""
    parts: list[tuple[Outcome, str | None, str]] = []
    for item in found:
        if isinstance(item, UsageEvent):
            items.append(item)
            item_events.append(index)
        else:
            parts.append((item[0], item[1], ""))
            decided[item[0].value] += 1
    return parts


def _combined(item_results: list[tuple[Outcome, str | None, str]]) -> tuple[Outcome, str | None]:
    """An event's outcome and reason from its items' (one item: its own)."""
    if len(item_results) == 1:
        return item_results[0][0], item_results[0][1]
    outcome = combined_outcome([o for o, _, _ in item_results])
    if not outcome.is_dead_letter:
        return outcome, None
    parts = []
    for item_outcome, reason, feature in item_results:
        if item_outcome.is_dead_letter:
            parts.append(reason or item_outcome.value)
        else:
            parts.append(f"feature {feature!r}: {item_outcome.value}")
    return outcome, "; ".join(parts)


def _dead_letter(
    payload: Any,
    outcome: Outcome,
    reason: str | None,
    event: UsageEvent | RawEvent | None,
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
