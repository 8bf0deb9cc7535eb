"""Notifications: what meterd tells the outside world, and the payload it sends.

Every notification is one JSON object (the payload of a ``meterd.notify`` task
and the body of a webhook POST)::

    {"id": "ntf_...",                 # stable: retries and redeliveries repeat it
     "type": "entitlement.threshold_crossed" | "entitlement.status_changed"
             | "entitlement.renewed" | "entitlement.period_opened"
             | "entitlement.void_scheduled" | "entitlement.reset",
     "org": "acme", "customer_id": "cust-1", "feature": "api_calls",
     "entitlement_id": "<uuid>",
     "occurred_at": "2026-11-22T10:00:00.000000Z",
     "data": {...}}                    # per type, below

``entitlement.threshold_crossed``: ``rule`` (the alert rule crossed: ``id``,
``kind`` ``PERCENT`` | ``REMAINING`` | ``CONSUMED``, ``threshold`` an exact decimal;
an org without rules has the defaults ``default_80`` and ``default_100``, whose
crossings also carry ``threshold_percent``, 80 or 100, as before rules existed),
``period_start``, ``quantity`` (the period's limit the rule was judged against:
for a renewed term of an entitlement that rolls over, its renewal quantity plus
what the term before carried as ingest counted it then, and then also
``rolled_over``, that carry; null on a period without a limit, where only a
``CONSUMED`` rule fires), ``consumed`` (the highest
consumption the ingest batch that crossed it reached, so it may be past the
threshold; a LATEST level may have fallen again by the batch's end; the
consumption written when the flush left out events counted twice), quantities as
exact decimal strings.

``entitlement.status_changed`` / ``renewed`` / ``period_opened``: ``from_status``,
``to_status``, ``reason``, ``job_run_id``.

Renewals (and PAY_PER_USE months) recorded together are announced once: a
backdated grant, a lifecycle run after missed runs or a resume that catches up
several terms sends ONE ``renewed`` (``period_opened``) notification, of the
last of them, whose ``data`` adds ``caught_up``: ``terms`` (how many renewals or
months it stands for), ``summarised`` (how many of them are one summary audit
row with no period row: those that ended before the late window, or beyond the
50 latest), ``first_at`` (when the first fell due) and ``until`` (where the
last term recorded ends: the current term's end, when it is still running).
One renewal alone is notified as before, without ``caught_up``. A renewal that
changes the status (a renewing grant recorded EXPIRED or GRACE reopens by
renewing) is a status change: it is announced on its own as
``entitlement.status_changed`` (with ``caught_up`` when it is a summary), and
the renewals after it as above.

A crossing is recorded once per (entitlement, period, rule) and a
transition once per step, so each notification exists once; delivery to the
queue and to a webhook is at least once, and receivers dedupe on ``id``.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from meterd.core.quantity import format_quantity, from_units
from meterd.core.timeutil import from_epoch_micros, isoformat

#: Percentages of a PRE_PAID quantity whose crossing is announced in an org without
#: alert rules (the default rules; see lua/ingest/thresholds.lua).
THRESHOLDS = (80, 100)

#: Prefix of the pending-hash fields that record crossings (see ingest.lua).
CROSSING_FIELD_PREFIX = "n:"


class AlertKind(StrEnum):
    """What an alert rule's threshold measures."""

    PERCENT = "PERCENT"  # consumed at or above this percent of the period's limit
    REMAINING = "REMAINING"  # remaining (limit - consumed) at or below this quantity
    CONSUMED = "CONSUMED"  # consumed at or above this quantity (limited or not)


#: The code of each kind in the resolution data (lua/ingest/thresholds.lua).
KIND_CODES = {AlertKind.PERCENT: "P", AlertKind.REMAINING: "R", AlertKind.CONSUMED: "C"}
#: 100 % in the units a PERCENT threshold travels in (10^-4 %).
PERCENT_ONE = 1_000_000
#: Fractional digits a PERCENT threshold may have, and its largest value.
PERCENT_DIGITS = 4
MAX_PERCENT = Decimal(10_000)
#: The prefix of the public id of a default rule (``default_80``, ``default_100``).
DEFAULT_RULE_PREFIX = "default_"


def percent_point(limit: int, p: int) -> int:
    """The smallest consumption (units) that is at least ``p`` / ``PERCENT_ONE`` of
    ``limit``: the twin of thresholds.lua's ``percent_point``."""
    return -(-limit * p // PERCENT_ONE)


@dataclass(frozen=True, slots=True)
class AlertRule:
    """An alert rule as crossings are judged on it: ``id`` is the short id the
    crossing field carries ("80" and "100" for the defaults)."""

    id: str
    kind: AlertKind
    threshold: Decimal

    @property
    def public_id(self) -> str:
        return DEFAULT_RULE_PREFIX + self.id if self.id.isdigit() else self.id

    def units(self, scale: int) -> int:
        """The threshold as the resolution entry carries it: 10^-4 % for PERCENT,
        else units of the feature's scale (CONSUMED rounded up, REMAINING down, so
        the point is the first whole unit that satisfies the rule)."""
        if self.kind is AlertKind.PERCENT:
            return int(self.threshold.scaleb(PERCENT_DIGITS))
        ratio = self.threshold.scaleb(scale)
        whole = int(ratio)  # toward zero: thresholds are not negative
        if self.kind is AlertKind.CONSUMED and whole != ratio:
            whole += 1
        return whole

    def encoded(self, scale: int) -> tuple[str, str, int]:
        return (self.id, KIND_CODES[self.kind], self.units(scale))

    def point(self, limit: int | None, scale: int) -> int | None:
        """The consumption (units) at which it fires on a period of ``limit`` units
        (None or negative: unlimited); None: it cannot fire there."""
        if self.kind is AlertKind.CONSUMED:
            return self.units(scale)
        if limit is None or limit <= 0:
            return None
        if self.kind is AlertKind.PERCENT:
            return percent_point(limit, self.units(scale))
        return limit - self.units(scale)

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.public_id,
            "kind": self.kind.value,
            "threshold": format_quantity(self.threshold),
        }


#: The rules of an org without its own.
DEFAULT_RULES = tuple(AlertRule(str(p), AlertKind.PERCENT, Decimal(p)) for p in THRESHOLDS)


class NotificationType(StrEnum):
    THRESHOLD_CROSSED = "entitlement.threshold_crossed"
    STATUS_CHANGED = "entitlement.status_changed"
    RENEWED = "entitlement.renewed"
    PERIOD_OPENED = "entitlement.period_opened"
    #: A void from an instant still to come (its TERMINATED step is notified then).
    VOID_SCHEDULED = "entitlement.void_scheduled"
    #: The current period closed at an instant and a fresh one opened from it.
    RESET = "entitlement.reset"


class Delivery(StrEnum):
    """Where a notification's webhook delivery stands."""

    PENDING = "pending"  # published, or to be published, to meterd.notify
    DELIVERED = "delivered"  # the org's webhook answered 2xx
    NO_WEBHOOK = "no_webhook"  # published; the org has no webhook to call
    FAILED = "failed"  # the webhook kept failing: given up after the last attempt


@dataclass(frozen=True, slots=True)
class Crossing:
    """A threshold crossing as ingest.lua recorded it in the pending hash."""

    entitlement_id: uuid.UUID
    period_start: datetime
    #: The short id of the rule crossed ("80" or "100": a default rule).
    rule_id: str
    at: datetime
    #: Integer units of the feature's scale.
    consumed_units: int
    #: The PRE_PAID limit the script judged the rule against (units; a rolled-over
    #: term's includes its carry); None on a period without one, or when recorded
    #: by a script from before it said.
    limit_units: int | None = None

    @classmethod
    def parse(cls, field: str, value: str) -> Crossing:
        """From ``n:<ent hex>:<period start us>:<rule id>`` ->
        ``<at us>:<consumed units>[:<limit units>]``."""
        _, ent, start, rule_id = field.split(":")
        at, consumed, *limit = value.split(":")
        return cls(
            uuid.UUID(hex=ent),
            from_epoch_micros(int(start)),
            rule_id,
            from_epoch_micros(int(at)),
            int(consumed),
            int(limit[0]) if limit else None,
        )

    @property
    def default_rule(self) -> AlertRule | None:
        return next((r for r in DEFAULT_RULES if r.id == self.rule_id), None)

    @property
    def notification_id(self) -> str:
        # a default rule's id is its percentage: the ids of before rules existed
        key = f"{self.entitlement_id.hex}:{self.period_start.isoformat()}:{self.rule_id}"
        return "ntf_thr_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def transition_notification_id(transition_id: uuid.UUID) -> str:
    return f"ntf_trn_{transition_id.hex}"


def transition_type(from_status: str, to_status: str, reason: str) -> NotificationType:
    if from_status != to_status:
        return NotificationType.STATUS_CHANGED
    if reason.startswith(PERIOD_OPENED_REASON):  # also a summary of several months
        return NotificationType.PERIOD_OPENED
    if reason.startswith(VOID_SCHEDULED_REASON):
        return NotificationType.VOID_SCHEDULED
    if reason.startswith(RESET_REASON):
        return NotificationType.RESET
    return NotificationType.RENEWED


#: The reason recorded when a PAY_PER_USE entitlement opens its month's period.
PERIOD_OPENED_REASON = "calendar month opened"
#: The reasons of the audit rows of a void scheduled ahead and of a reset (the
#: status stays: ``<reason> <instant>: <the operator's reason>``).
VOID_SCHEDULED_REASON = "void scheduled from"
RESET_REASON = "reset at"


@dataclass(frozen=True, slots=True)
class NewNotification:
    """A notification about to be recorded: its payload and the columns kept beside it."""

    entitlement_id: uuid.UUID
    occurred_at: datetime
    payload: dict[str, Any]


def envelope(
    *,
    notification_id: str,
    kind: NotificationType,
    org: str,
    customer_id: str,
    feature: str,
    entitlement_id: uuid.UUID,
    occurred_at: datetime,
    data: dict[str, Any],
) -> NewNotification:
    payload = {
        "id": notification_id,
        "type": kind.value,
        "org": org,
        "customer_id": customer_id,
        "feature": feature,
        "entitlement_id": str(entitlement_id),
        "occurred_at": isoformat(occurred_at),
        "data": data,
    }
    return NewNotification(entitlement_id, occurred_at, payload)


def threshold_data(
    crossing: Crossing,
    rule: AlertRule,
    quantity: Decimal | None,
    scale: int,
    *,
    rolled_over: Decimal | None = None,
) -> dict[str, Any]:
    """``quantity``: the limit the crossing was judged against; ``rolled_over``: what
    of it the term before carried (given for entitlements that roll over only, so
    the payloads of the others keep their fields)."""
    data: dict[str, Any] = {"rule": rule.payload()}
    if crossing.default_rule is not None:
        data["threshold_percent"] = int(crossing.rule_id)
    data.update(
        {
            "period_start": isoformat(crossing.period_start),
            "quantity": format_quantity(quantity) if quantity is not None else None,
            "consumed": format_quantity(from_units(crossing.consumed_units, scale)),
        }
    )
    if rolled_over is not None:
        data["rolled_over"] = format_quantity(rolled_over)
    return data


def transition_data(
    from_status: str, to_status: str, reason: str, job_run_id: str
) -> dict[str, Any]:
    return {
        "from_status": from_status,
        "to_status": to_status,
        "reason": reason,
        "job_run_id": job_run_id,
    }


def catch_up_data(
    *, terms: int, summarised: int, first_at: datetime, until: datetime
) -> dict[str, Any]:
    """The ``caught_up`` part of the one notification of several renewals (or months)."""
    return {
        "caught_up": {
            "terms": terms,
            "summarised": summarised,
            "first_at": isoformat(first_at),
            "until": isoformat(until),
        }
    }
