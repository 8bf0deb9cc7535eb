"""Event intake over HTTP: validate each event now, queue the valid ones for ingest,
dead-letter the rest (replayable), and report every event's fate by index.

The events are published under the API key's org; an event naming another org
is invalid. Publishing is handed in (``publish``), so this service knows
nothing of Celery: the API wires meterd's Celery app.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meterd.events import InvalidEvent, parse_event
from meterd.storage.dead_letters import DeadLetterRecord, DeadLetterStore

#: Valid events are published in messages of at most this many events.
EVENTS_PER_MESSAGE = 500

Publisher = Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True, slots=True)
class IntakeResult:
    index: int
    id: str | None
    #: "queued" or "invalid".
    status: str
    reason: str | None = None


@dataclass(slots=True)
class IntakeReport:
    queued: int = 0
    invalid: int = 0
    results: list[IntakeResult] = field(default_factory=list)


class EventIntake:
    def __init__(self, dead_letters: DeadLetterStore) -> None:
        self.dead_letters = dead_letters

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
            if isinstance(parsed, InvalidEvent):
                event_id = payload.get("id") if isinstance(payload, dict) else None
                report.results.append(
                    IntakeResult(
                        index,
                        event_id if isinstance(event_id, str) else None,
                        "invalid",
                        parsed.reason,
                    )
                )
                dead.append(
                    DeadLetterRecord(
                        reason="invalid", detail=parsed.reason, payload=payload, org_id=org
                    )
                )
                continue
            queued.append({**payload, "org": org})
            report.results.append(IntakeResult(index, parsed.id, "queued"))
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
