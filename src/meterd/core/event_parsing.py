"""``parse_event``: one CloudEvent payload as the event it is, or why it is not.

Two readers, one answer: the common shape goes through ``fast_events`` (no
pydantic), everything else, invalid events included, through the full model
(``events.parse_event_by_model``). This module sits above both, so neither imports
the other's caller.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from meterd.core.events import InvalidEvent, RawEvent, UsageEvent, parse_event_by_model
from meterd.core.fast_events import fast_event

__all__ = ["parse_event"]


def parse_event(
    payload: Any, *, received_at: datetime, org: str | None = None
) -> UsageEvent | RawEvent | InvalidEvent:
    """Validate one CloudEvent. ``org`` (from an API key) overrides the attribute.
    An event of the common shape is read by ``fast_events`` (the same result, no
    pydantic); anything else, invalid events included, by the full model."""
    if type(payload) is dict:
        fast = fast_event(payload, received_at=received_at, org=org)
        if fast is not None:
            return fast
    return parse_event_by_model(payload, received_at=received_at, org=org)
