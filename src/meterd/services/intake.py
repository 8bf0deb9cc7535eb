"""Event intake over HTTP: validate each event now, queue the valid ones for ingest,
dead-letter the rest (replayable), and report every event's fate by index.

The events are published under the API key's org; an event naming another org
is invalid. Time is settled here, at receipt: an event without ``time`` is
stamped with the receive time before it is queued (so how long it waits in
the queue never changes which period or entitlement counts it), and the
worker's time rules apply at once: beyond the clock skew is ``invalid``, older
than the late window is ``late`` (both dead-lettered and reported). Publishing
is handed in (``publish``), so this service knows nothing of Celery: the API
wires meterd's Celery app.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from meterd.core.domain import Outcome
from meterd.core.event_parsing import parse_event
from meterd.core.events import (
    InvalidEvent,
    dead_letter_payload,
    is_short_text,
    time_verdict,
    with_time,
)
from meterd.storage.dead_letters import DeadLetterRecord, DeadLetterStore

#: Valid events are published in messages of at most this many events.
EVENTS_PER_MESSAGE = 500

Publisher = Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True, slots=True)
class IntakeResult:
    index: int
    id: str | None
    #: "queued", or why not: "invalid" or "late" (dead-lettered).
    status: str
    reason: str | None = None


@dataclass(slots=True)
class IntakeReport:
    queued: int = 0
    invalid: int = 0
    results: list[IntakeResult] = field(default_factory=list)


class EventIntake:
    def __init__(
        self, dead_letters: DeadLetterStore, *, future_skew: timedelta, late_window: timedelta
    ) -> None:
        self.dead_letters = dead_letters
        self.future_skew = future_skew
        self.late_window = late_window

    def accept(
        self, events: Sequence[Any], org: str, now: datetime, publish: Publisher
    ) -> IntakeReport:
        report = IntakeReport()
        queued: list[dict[str, Any]] = []
        dead: list[DeadLetterRecord] = []
        for index, payload in enumerate(events):
            reason = _org_mismatch(payload, org)
            parsed = (
                InvalidEvent(payload, reason)
                if reason
                else parse_event(payload, received_at=now, org=org)
            )
            refused: tuple[Outcome, str] | None
            if isinstance(parsed, InvalidEvent):
                event_id = payload.get("id") if isinstance(payload, dict) else None
                refused = (Outcome.INVALID, parsed.reason)
                event_id = event_id if is_short_text(event_id) else None
            else:
                payload = with_time(payload, parsed)
                refused = time_verdict(
                    parsed, now, future_skew=self.future_skew, late_window=self.late_window
                )
                event_id = parsed.id
            if refused is not None:
                outcome, why = refused
                report.results.append(IntakeResult(index, event_id, outcome.value, why))
                dead.append(
                    DeadLetterRecord(
                        reason=outcome.value,
                        detail=why,
                        payload=dead_letter_payload(payload),
                        org_id=org,
                        source=None if isinstance(parsed, InvalidEvent) else parsed.source,
                        event_id=event_id if not isinstance(parsed, InvalidEvent) else None,
                    )
                )
                continue
            queued.append({**payload, "org": org})
            report.results.append(IntakeResult(index, event_id, "queued"))
        for start in range(0, len(queued), EVENTS_PER_MESSAGE):
            publish(queued[start : start + EVENTS_PER_MESSAGE])
        if dead:
            self.dead_letters.add(dead, now)
        report.queued, report.invalid = len(queued), len(dead)
        return report


def _org_mismatch(payload: Any, org: str) -> str | None:
    if isinstance(payload, dict) and "org" in payload and payload["org"] != org:
        return f"org {str(payload['org'])[:64]!r} does not match the API key's org"
    return None
