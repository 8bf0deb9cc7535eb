"""Meters: features defined over raw events, and the dimensions entitlements filter on.

A feature is fed in one of two ways:

* **Usage events** (``type: meterd.usage``) name the feature in ``data.feature``
  and carry ``data.quantity``, as they always have.
* **Raw events** of the feature's ``event_type`` (say ``llm.request``): the
  meter reads the value from the ``data`` property ``value_property`` (a dotted
  path such as ``usage.input_tokens``) and counts only events whose ``data``
  matches its ``filters`` (equality, e.g. ``{"model": "gpt-4o"}``). One raw
  event may feed several features (input and output tokens): it becomes one
  *item* per feature it feeds, each counted, deduplicated and logged on its own
  under ``(org, source, id, feature)`` (``item_id``).

What an item counts, by the feature's ``domain.Aggregation``: SUM the value,
COUNT one per event, UNIQUE_COUNT one per distinct value in the period, MAX
the peak value, LATEST the value of the latest event by event time.

Dimensions: an entitlement may carry ``filters`` too (a limit per model); an
item counts only on entitlements whose filters its event's ``data`` matches.
Paths, values and matching are defined here once, for the meters and the
entitlements alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from meterd.core.domain import Aggregation
from meterd.core.errors import InvalidError

#: The CloudEvents type of usage events (``data.feature`` + ``data.quantity``).
USAGE_EVENT_TYPE = "meterd.usage"
#: Between an event's id and the feature in an item's id: ids are printable, so
#: this control character never occurs in one and two items never share an id.
ITEM_SEPARATOR = "\x1f"
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EVENT_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)
MAX_PATH_SEGMENTS = 8
MAX_DIMENSIONS = 16
MAX_DIMENSION_VALUE = 200

#: A dimension's value: text, an integer or a boolean (never a float: equality on
#: binary fractions is not what anybody means).
DimensionValue = str | int | bool


class MeterError(InvalidError):
    """A meter or a dimension filter that cannot be used, and why."""


def parse_path(text: str, what: str = "property") -> tuple[str, ...]:
    """A dotted path into ``data``: ``usage.input_tokens`` or ``$.usage.input_tokens``
    (segments of letters, digits, ``_`` and ``-``; at most 8)."""
    if not isinstance(text, str):
        raise MeterError(f"{what} must be a dotted path such as usage.input_tokens")
    body = text[2:] if text.startswith("$.") else text
    segments = tuple(body.split("."))
    if len(segments) > MAX_PATH_SEGMENTS or not all(_SEGMENT.match(s) for s in segments):
        raise MeterError(
            f"{what} {text[:80]!r} is not a dotted path such as usage.input_tokens"
            f" (at most {MAX_PATH_SEGMENTS} segments of letters, digits, _ and -)"
        )
    return segments


def path_text(path: tuple[str, ...]) -> str:
    return ".".join(path)


def check_event_type(text: str) -> str:
    if not isinstance(text, str) or _EVENT_TYPE.match(text) is None:
        raise MeterError(
            f"event_type {str(text)[:80]!r} must be 1-128 characters: letters, digits and _.:/-"
        )
    if text == USAGE_EVENT_TYPE:
        raise MeterError(
            f"event_type {USAGE_EVENT_TYPE!r} is the usage event itself: leave event_type"
            " empty to count usage events that name the feature"
        )
    return text


def check_dimensions(raw: object, what: str = "filters") -> dict[str, DimensionValue]:
    """Dimension filters as stored: ``{"model": "gpt-4o", "region.zone": 3}``, each
    key a path (normalised, without ``$.``) and each value text (at most 200
    characters), an integer or a boolean; at most 16."""
    if not isinstance(raw, Mapping):
        raise MeterError(f"{what} must be an object of property -> value")
    if len(raw) > MAX_DIMENSIONS:
        raise MeterError(f"{what} may name at most {MAX_DIMENSIONS} properties")
    checked: dict[str, DimensionValue] = {}
    for key, value in raw.items():
        path = path_text(parse_path(key, f"{what} property"))
        number = isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2**53)
        text = isinstance(value, str) and len(value) <= MAX_DIMENSION_VALUE and value.isprintable()
        if number or text:
            checked[path] = value
        else:
            raise MeterError(
                f"{what}[{path!r}] must be text (at most {MAX_DIMENSION_VALUE} printable"
                " characters), an integer or a boolean"
            )
    return checked


_MISSING = object()


def lookup(data: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in ``data``, or ``MISSING``."""
    value = data
    for segment in path:
        if not isinstance(value, Mapping) or segment not in value:
            return MISSING
        value = value[segment]
    return value


MISSING: Any = _MISSING


def same_value(found: Any, wanted: DimensionValue) -> bool:
    """Equality of JSON scalars of the same kind (``True`` is not ``1``)."""
    if isinstance(wanted, bool) or isinstance(found, bool):
        return isinstance(found, bool) and isinstance(wanted, bool) and found is wanted
    if isinstance(wanted, int):
        return isinstance(found, int) and found == wanted
    return isinstance(found, str) and found == wanted


def matches(data: Any, filters: Mapping[str, DimensionValue] | None) -> bool:
    """Whether an event's ``data`` has every value ``filters`` names."""
    if not filters:
        return True
    return all(same_value(lookup(data, tuple(k.split("."))), v) for k, v in filters.items())


@dataclass(frozen=True, slots=True)
class Meter:
    """How one feature reads events (the feature's columns, checked)."""

    feature: str
    aggregation: Aggregation = Aggregation.SUM
    scale: int = 6
    #: None: the feature counts ``meterd.usage`` events naming it.
    event_type: str | None = None
    #: Where the value is in ``data`` (None: ``data.quantity`` for usage events,
    #: nothing for COUNT).
    value_property: tuple[str, ...] | None = None
    filters: Mapping[str, DimensionValue] | None = None
    #: When the feature was created: a raw event timed before it does not feed the
    #: meter (a meter starts at its creation, so a redelivery of an event accepted
    #: before it existed never counts for it), unless an operator replays the event
    #: from the dead letters (``starts_by``). None: no start (a meter not read from
    #: the database).
    created_at: datetime | None = None

    def starts_by(self, time: datetime) -> bool:
        """Whether raw events timed ``time`` feed this meter (it was created at or
        before that time)."""
        return self.created_at is None or self.created_at <= time


def check_meter(
    *,
    feature: str,
    aggregation: str,
    scale: int,
    event_type: str | None,
    value_property: str | None,
    filters: object | None,
) -> Meter:
    """A feature's meter columns as a ``Meter``, or a ``MeterError`` saying what is
    wrong: an unknown aggregation, a scale outside 0-6, a raw-event meter without
    the property its aggregation reads, a value property a usage event cannot use,
    filters without an event type."""
    try:
        agg = Aggregation(aggregation)
    except ValueError:
        names = ", ".join(a.value for a in Aggregation)
        raise MeterError(f"aggregation {str(aggregation)[:40]!r} is not one of {names}") from None
    if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= 6:
        raise MeterError("scale must be an integer from 0 to 6 (fractional digits counted)")
    path = parse_path(value_property, "value_property") if value_property is not None else None
    if event_type is not None:
        check_event_type(event_type)
        if agg is not Aggregation.COUNT and path is None:
            raise MeterError(
                f"a {agg.value} meter over {event_type!r} events needs value_property:"
                " the data property it reads"
            )
    elif path is not None and agg is not Aggregation.UNIQUE_COUNT:
        raise MeterError(
            "value_property needs event_type (usage events carry their value in"
            " data.quantity), except for UNIQUE_COUNT, where it names the property counted"
        )
    elif agg is Aggregation.UNIQUE_COUNT and path is None:
        raise MeterError("a UNIQUE_COUNT feature needs value_property: the property counted")
    if filters is not None and event_type is None:
        raise MeterError("meter filters need event_type: they select raw events")
    checked = check_dimensions(filters, "meter_filters") if filters is not None else None
    return Meter(feature, agg, scale, event_type, path, checked or None)


def item_id(event_id: str, feature: str) -> str:
    """The id of the item a raw event feeds ``feature`` with (its dedupe identity
    with the event's org and source)."""
    return f"{event_id}{ITEM_SEPARATOR}{feature}"
