"""The fast path of ``parse_event``: the common event shape read without pydantic.

Almost every event a worker sees has the same shape: the CloudEvents attributes as
plain ASCII text, an RFC 3339 ``time`` (or none), and a flat ``data`` of JSON
scalars (a usage event: ``feature``, ``quantity``, perhaps ``entitlement_id``).
``fast_event`` reads such an event with a few type checks, C string predicates
and regular expressions, into exactly the ``UsageEvent`` or ``RawEvent`` the full
model builds, and **declines** (None) anything else: text outside ASCII, a time in
another form, nested data, a quantity it cannot parse, any attribute it is unsure
of. A declined event is read by the full pydantic model, so every invalid event
gets today's reason from one place. ``tests/core/test_fast_events.py`` checks with
hypothesis that both paths agree on every input, valid or not.

Rules kept equal to the model's (``core.events``):

* patterns are matched whole (``fullmatch``): pydantic's regular expressions
  (Rust's) never let ``$`` match before a final newline as Python's ``re`` does;
* attribute text is ASCII, so ``isprintable`` is ``PRINTABLE_PATTERN`` exactly and a
  length in characters is one in bytes;
* the quantity goes through the same ``parse_event_quantity`` (text and integers
  exact, a JSON number through its literal, never through float arithmetic);
* ``time`` is read by ``datetime.fromisoformat`` only in the RFC 3339 form both
  parsers read alike (``T``, ``Z`` or an offset under 24 hours, 1-6 fractional
  digits), then converted to UTC; out of range, it is declined.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeGuard

from meterd.core.domain import CUSTOMER_ID_MAX
from meterd.core.events import (
    RawEvent,
    UsageEvent,
    new_raw_event,
    new_usage_event,
    shape_problem,
)
from meterd.core.meters import EVENT_TYPE_PATTERN, USAGE_EVENT_TYPE
from meterd.core.quantity import QuantityError, parse_event_quantity

__all__ = ["fast_event"]

#: The attributes the envelope model reads; an event with others (extensions) has
#: its shape checked whole (``events.shape_problem``).
_ATTRIBUTES = frozenset(
    ("specversion", "id", "source", "type", "subject", "org", "time", "datacontenttype", "data")
)
#: The values of ``datacontenttype`` read here (both match the model's pattern).
_CONTENT_TYPES = frozenset(("application/json", "application/cloudevents+json"))
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # ORG_ID_PATTERN, FEATURE_KEY_PATTERN
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN.removeprefix("^").removesuffix("$"))
_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: The longest an ``id`` or ``source`` may be (``events.MAX_ID_LENGTH``).
_ID_MAX = 512
#: An upper bound of the attributes' size as JSON when each passed its checks here
#: (at most about 1,900 characters, each at most 6 bytes escaped, with their keys);
#: ``data`` may take the rest of ``events.MAX_EVENT_BYTES`` before the size is
#: measured exactly (its bound is ``shape_problem``'s).
_ATTRIBUTES_BOUND = 16 * 1024
_DATA_BOUND = 64 * 1024 - _ATTRIBUTES_BOUND

#: Keys (org ids, feature keys) and event types seen valid, so the common ones are
#: one set lookup; cleared when full (a bound on memory, not a cache policy).
_KEYS_OK: set[str] = set()
_TYPES_OK: set[str] = set()
_SEEN_MAX = 4096
#: Quantities as sent (text, integers) and their value, for the common ones
#: (``"1"``): one dict lookup instead of the grammar and a ``Decimal``.
_QUANTITIES: dict[str | int, Decimal] = {}
#: The last time text read and its value: a batch stamped at receipt shares one.
_last_time: tuple[str, datetime] = ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC))


def _seen_valid(text: object, pattern: re.Pattern[str], seen: set[str]) -> TypeGuard[str]:
    """Whether ``text`` is a ``str`` that ``pattern`` matches whole."""
    if type(text) is not str:
        return False
    if text in seen:
        return True
    if pattern.fullmatch(text) is None:
        return False
    if len(seen) >= _SEEN_MAX:
        seen.clear()
    seen.add(text)
    return True


def _printable_ascii(text: str) -> bool:
    """``PRINTABLE_PATTERN`` for ASCII text (no C0 control, no DEL)."""
    return text.isascii() and text.isprintable()


def _time(text: object) -> datetime | None:
    global _last_time
    if type(text) is not str:
        return None
    last = _last_time
    if text == last[0]:
        return last[1]
    if _TIME.fullmatch(text) is None:
        return None
    try:
        moment = datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    _last_time = (text, moment)
    return moment


def _flat_data_ok(data: dict[Any, Any]) -> bool:
    """Whether ``data`` is a flat object ``shape_problem`` has nothing against and
    small enough not to be measured: text keys, scalar values (finite numbers,
    valid Unicode text). False: look closer (not necessarily a problem)."""
    bound = 0
    for key, value in data.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(value)
        if kind is str:
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:
                    return False
            bound += 6 * (len(key) + len(value)) + 7
        elif kind is int:
            bound += 6 * len(key) + 9 + value.bit_length()
        elif value is None or kind is bool:
            bound += 6 * len(key) + 29  # as shape_problem counts them
        elif isinstance(value, float) and not isinstance(value, bool):
            if not math.isfinite(value):
                return False
            bound += 6 * len(key) + 29
        else:
            return False
    return bound <= _DATA_BOUND


def _keys_are_text(mapping: dict[Any, Any]) -> bool:
    return all(type(key) is str for key in mapping)


def _shape_ok(payload: dict[Any, Any], data: dict[Any, Any]) -> bool:
    """Whether ``shape_problem`` has nothing against an event not of the common shape
    (extensions, nested or large data) and its keys are text (the model's
    ``dict[str, Any]``)."""
    return _keys_are_text(payload) and _keys_are_text(data) and shape_problem(payload) is None


def _quantity(value: object) -> Decimal | None:
    """``parse_event_quantity``, None where it raises."""
    key = value if isinstance(value, str | int) and not isinstance(value, bool) else None
    if key is not None and (found := _QUANTITIES.get(key)) is not None:
        return found
    try:
        amount = parse_event_quantity(value)
    except (QuantityError, ValueError, TypeError):
        return None
    if key is not None:
        if len(_QUANTITIES) >= _SEEN_MAX:
            _QUANTITIES.clear()
        _QUANTITIES[key] = amount
    return amount


def _usage_event(
    data: dict[str, Any], org: str, subject: str, source: str, event_id: str, moment: datetime
) -> UsageEvent | None:
    feature = data.get("feature")
    quantity = data.get("quantity")
    if quantity is None or not _seen_valid(feature, _KEY, _KEYS_OK):
        return None
    amount = _quantity(quantity)
    if amount is None:
        return None
    text = data.get("entitlement_id")
    entitlement = None
    if text is not None:
        if type(text) is not str or _UUID.fullmatch(text) is None:
            return None
        entitlement = uuid.UUID(text)
    return new_usage_event(
        org, subject, feature, source, event_id, moment, amount, entitlement, data
    )


def fast_event(
    payload: dict[str, Any], *, received_at: datetime, org: str | None
) -> UsageEvent | RawEvent | None:
    """The ``UsageEvent`` or ``RawEvent`` the full model would make of ``payload``
    (a dict), or None if it is not of the common shape (then the model decides)."""
    data = payload.get("data")
    version = payload.get("specversion")
    content_type = payload.get("datacontenttype")
    if (
        type(data) is not dict
        or type(version) is not str
        or version != "1.0"
        or (
            content_type is not None
            and (type(content_type) is not str or content_type not in _CONTENT_TYPES)
        )
    ):
        return None
    if not (payload.keys() <= _ATTRIBUTES and _flat_data_ok(data)) and not _shape_ok(payload, data):
        return None
    event_id, source, subject = payload.get("id"), payload.get("source"), payload.get("subject")
    event_org = payload.get("org")
    if org is not None:
        # The attribute is replaced, unread: the shape walk skipped for the common
        # shape is owed for it (plain text passes it).
        if event_org is not None and not (
            type(event_org) is str and len(event_org) <= _ID_MAX and event_org.isascii()
        ):
            return None
        event_org = org
    if not (
        type(event_id) is str
        and type(source) is str
        and type(subject) is str
        and 0 < len(event_id) <= _ID_MAX
        and 0 < len(source) <= _ID_MAX
        and 0 < len(subject) <= CUSTOMER_ID_MAX
        and _printable_ascii(event_id + source + subject)  # each is, if all three are
        and _seen_valid(event_org, _KEY, _KEYS_OK)
    ):
        return None
    stamp = payload.get("time")
    moment = received_at if stamp is None else _time(stamp)
    if moment is None:
        return None
    kind = payload.get("type")
    if kind == USAGE_EVENT_TYPE and type(kind) is str:
        return _usage_event(data, event_org, subject, source, event_id, moment)
    if not _seen_valid(kind, _EVENT_TYPE, _TYPES_OK):
        return None
    return new_raw_event(event_org, subject, source, event_id, kind, moment, data)
