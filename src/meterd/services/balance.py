"""The real-time read: consumed = flushed (database) + pending (Redis).

Redis and the database cannot be read in one snapshot, so the read is
optimistic: read Redis atomically (pending, the batch in flight and the flush
epoch), then the database in one statement (flushed values and whether the
in-flight batch is committed), and retry if a new flush began in between.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from meterd.domain import Balance, BillingType, EntitlementView, Status, effective_state
from meterd.errors import UnavailableError
from meterd.quantity import from_micros
from meterd.redis_keys import period_field
from meterd.services.resolution import ResolutionCache
from meterd.storage.counters import CounterStore
from meterd.storage.resolution_views import ResolutionViewStore
from meterd.storage.usage import UsageStore
from meterd.timeutil import epoch_micros, from_epoch_micros, month_start

#: A flush starts every few seconds, so a second attempt nearly always succeeds; the
#: bound matters only when flushes run back to back (tests, a flush backlog).
_MAX_ATTEMPTS = 50


class BalanceError(UnavailableError):
    """Flushes kept racing the read; try again."""


PeriodKey = tuple[uuid.UUID, datetime]


def current_period(view: EntitlementView, now: datetime) -> tuple[datetime, Decimal | None]:
    """(period start, period quantity) of the period of ``view`` containing ``now``."""
    if view.billing_type is BillingType.PAY_PER_USE:
        return month_start(now), view.quantity
    chosen = None
    for period in sorted(view.periods, key=lambda p: p.start):
        if period.start <= now:
            chosen = period
    if chosen is None:
        return view.starts_at, view.quantity
    return chosen.start, chosen.quantity


class BalanceService:
    def __init__(
        self,
        counters: CounterStore,
        usage: UsageStore,
        views: ResolutionViewStore,
        *,
        late_window: timedelta,
        resolution: ResolutionCache | None = None,
    ) -> None:
        self.counters = counters
        self.usage = usage
        self.views = views
        self.late_window = late_window
        #: Loads a customer's resolution data when ``current`` finds it uncached.
        self.resolution = resolution

    def current(self, org: str, customer: str, feature: str, now: datetime) -> list[Balance]:
        """From Redis alone when the customer's data is cached (loaded first if it is
        not); the database read is the fallback."""
        found = self.live(org, customer, feature, now)
        if found is None and self.resolution is not None:
            self.resolution.fill([(org, customer, feature)], now)
            found = self.live(org, customer, feature, now)
        return found if found is not None else self.balances(org, customer, feature, now)

    def consumed(self, periods: list[PeriodKey]) -> dict[PeriodKey, tuple[int, int]]:
        """(flushed, not yet flushed) micro-units of each period, consistent."""
        fields = [period_field(e, s) for e, s in periods]
        for attempt in range(_MAX_ATTEMPTS):
            if attempt >= 2:
                time.sleep(random.uniform(0, 0.001 * attempt))  # step out of a flush's way
            snap = self.counters.pending_snapshot(fields)
            flushed, committed = self.usage.flushed_consumption(periods, snap.inflight_batch)
            if self.counters.flush_epoch() != snap.epoch:
                continue  # a flush began while we read: pending moved, read again
            result = {}
            for key, field in zip(periods, fields, strict=True):
                unflushed = snap.pending[field] + (0 if committed else snap.inflight[field])
                result[key] = (flushed.get(key, 0), unflushed)
            return result
        raise BalanceError("flushes kept racing the read")

    def balances(self, org: str, customer: str, feature: str, now: datetime) -> list[Balance]:
        """The current period of each of the customer's entitlements for a feature."""
        key = (org, customer, feature)
        views, _ = self.views.views([key], usable_after=now - self.late_window)[key]
        found = self.balances_of(views, now)
        return [found[view.id] for view in views]

    def live(self, org: str, customer: str, feature: str, now: datetime) -> list[Balance] | None:
        """The balances from Redis alone: the cached resolution data and the running
        totals ingest and reserve keep (two round trips, no SQL), in burn-down
        order. None when the customer's data is not cached: use ``balances``."""
        raw = self.counters.resolution_entry(org, customer, feature)
        if raw is None:
            return None
        entries: list[dict[str, Any]] = json.loads(raw)
        now_us = epoch_micros(now)
        periods = [_live_period(entry, now, now_us) for entry in entries]
        totals = self.counters.live_totals(org, customer, [field for field, _, _ in periods])
        result = []
        for entry, (field, start, limit) in zip(entries, periods, strict=True):
            status = _live_status(entry, now_us)
            billing = BillingType.PAY_PER_USE if entry["b"] == "U" else BillingType.PRE_PAID
            quantity = from_micros(limit) if limit >= 0 else None
            consumed = from_micros(totals[field])
            result.append(
                Balance(
                    entitlement_id=uuid.UUID(hex=entry["i"]),
                    period_start=from_epoch_micros(start),
                    quantity=quantity,
                    consumed=consumed,
                    flushed=None,
                    pending=None,
                    state=effective_state(status, billing, quantity, consumed),
                    usable=status in (Status.ACTIVE, Status.GRACE),
                )
            )
        return result

    def balances_of(
        self, views: Sequence[EntitlementView], now: datetime
    ) -> dict[uuid.UUID, Balance]:
        """The current (or, once ended, the last) period of each entitlement, read
        in one consistent snapshot."""
        current = {view.id: current_period(view, now) for view in views}
        values = self.consumed([(view.id, current[view.id][0]) for view in views])
        result = {}
        for view in views:
            start, quantity = current[view.id]
            flushed, pending = values[(view.id, start)]
            consumed = from_micros(flushed + pending)
            result[view.id] = Balance(
                entitlement_id=view.id,
                period_start=start,
                quantity=quantity,
                consumed=consumed,
                flushed=from_micros(flushed),
                pending=from_micros(pending),
                state=effective_state(view.status, view.billing_type, quantity, consumed),
                usable=_usable(view, now),
            )
        return result


def _live_status(entry: dict[str, Any], now_us: int) -> Status:
    """The status the clock gives an entry of the resolution data (the stored one may
    lag by a lifecycle interval; SUSPENDED is stored)."""
    if entry["t"] == "S":
        return Status.SUSPENDED
    if now_us < entry["s"]:
        return Status.PENDING
    until, ends = entry["u"], entry.get("e", entry["u"])
    if until >= 0 and now_us >= until:
        return Status.EXPIRED
    if ends >= 0 and now_us >= ends:
        return Status.GRACE
    return Status.ACTIVE


def _live_period(entry: dict[str, Any], now: datetime, now_us: int) -> tuple[str, int, int]:
    """(field, period start us, limit micros or -1) of the entry's current period."""
    if entry["b"] == "U":
        start = epoch_micros(month_start(now))
        return f"{entry['i']}:{start}", start, entry["q"]
    chosen = entry["p"][0] if entry["p"] else None
    for period in entry["p"]:
        if period[0] <= now_us:
            chosen = period
    if chosen is None:
        return f"{entry['i']}:{entry['s']}", entry["s"], entry["q"]
    return chosen[3], chosen[0], chosen[2]


def _usable(view: EntitlementView, now: datetime) -> bool:
    """Judged by the clock, like ingest: right even before the lifecycle job runs."""
    if view.status in (Status.SUSPENDED, Status.TERMINATED):
        return False
    until = view.usable_until
    return view.starts_at <= now and (until is None or now < until)
