"""Small builders shared by the tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from meterd.core.domain import BillingType
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.services.values import Entitlement

from .conftest import NOW


def grant(
    rt: Runtime,
    customer: str = "cust-1",
    quantity: str | None = "100",
    *,
    starts_at: datetime = NOW - timedelta(days=10),
    ends_at: datetime | None = NOW + timedelta(days=20),
    now: datetime = NOW,
    **extra: Any,
) -> Entitlement:
    """An entitlement created at ``now``: the tests' frozen NOW, or, for a grant dated
    from the real clock (read through the API, which uses it), ``utcnow()``: its status
    is recorded as of ``now``."""
    return rt.catalog.create_entitlement(
        NewEntitlement(
            org=extra.pop("org", "acme"),
            customer_id=customer,
            feature=extra.pop("feature", "api_calls"),
            quantity=Decimal(quantity) if quantity is not None else None,
            starts_at=starts_at,
            ends_at=ends_at,
            billing_type=extra.pop("billing_type", BillingType.PRE_PAID),
            **extra,
        ),
        now,
    )


def detail_of(response: Any) -> str:
    """The ``detail`` of an API answer that must be a 400."""
    assert response.status_code == 400, response.text
    detail: str = response.json()["detail"]
    return detail


def consumed(rt: Runtime, customer: str = "cust-1", *, now: datetime = NOW) -> dict[str, Decimal]:
    """Real-time consumed of each of the customer's entitlements, by entitlement id."""
    return {
        str(b.entitlement_id): b.consumed
        for b in rt.balance.balances("acme", customer, "api_calls", now)
    }


def flushed_total(rt: Runtime) -> Decimal:
    total = Decimal(0)
    for ent_periods in _all_periods(rt):
        total += ent_periods
    return total


def _all_periods(rt: Runtime) -> list[Decimal]:
    from sqlalchemy import select

    from meterd.storage.models import UsagePeriod

    with rt.database.sessions() as s:
        return list(s.scalars(select(UsagePeriod.consumed)))


def assert_log_matches_periods(rt: Runtime) -> None:
    """The event log and ``usage_periods`` hold the same usage: for every period with
    consumption, the sum of its logged event parts is its consumption, and the log
    holds nothing for any other period (or parts that sum to zero: an event and its
    void)."""
    from sqlalchemy import select

    from meterd.storage.models import UsagePeriod

    with rt.database.sessions() as s:
        periods = {
            (e, p): c
            for e, p, c in s.execute(
                select(UsagePeriod.entitlement_id, UsagePeriod.period_start, UsagePeriod.consumed)
            )
            if c
        }
    # an event that counted nothing (a hold settled with 0, a value already seen) is
    # logged with 0: a period with no consumption has no row to compare with
    logged = {key: total for key, total in rt.event_log.sums_by_period().items() if total}
    assert logged == periods


class Clock:
    """A clock moved by hand (for stores that take a ``clock`` callable)."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def done_notification(rt: Runtime, org: str = "acme") -> str:
    """The id of a notification of ``org`` recorded at NOW and already handled (no
    webhook endpoint then: ``no_webhook``), so it can be redelivered."""
    import uuid

    from meterd.core.notifications import NewNotification
    from meterd.storage.notifications import insert_notifications

    note_id = f"ntf_trn_{uuid.uuid4().hex}"
    payload = {"id": note_id, "org": org, "type": "entitlement.status_changed"}
    with rt.database.sessions.begin() as s:
        insert_notifications(s, [NewNotification(uuid.uuid4(), NOW, payload)], NOW)
    rt.notifications.deliver([{"id": note_id, "org": org}], NOW)
    return note_id
