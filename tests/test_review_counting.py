"""Review of issue 20 (items 4 and 7): what the bounded catch-up and the real-time
period history must still do.

* A step that changes the status is announced as a status change, also when it
  renews (a renewing entitlement recorded EXPIRED or GRACE is reopened by a
  renewal), however many renewals follow it in the same catch-up: grouping the
  renewals into one notification must not swallow it.
* The history walk of ``/periods`` and the resolution views read only the periods
  usage can still land in, not the entitlement's whole history (an hourly term
  stores 8,760 periods a year).
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.domain import BillingType, EntitlementView, Period, Renewal, Status
from meterd.core.terms import Term, TermUnit
from meterd.runtime import Runtime
from meterd.services import balance as balance_module
from meterd.services.catalog import EntitlementChange, NewEntitlement
from meterd.storage.models import UsagePeriod
from meterd.storage.resolution_views import ResolutionViewStore

from .conftest import NOW
from .helpers import grant

HOUR = timedelta(hours=1)


def notified(rt: Runtime, entitlement_id: uuid.UUID) -> list[tuple[str, str, str]]:
    """(type, from_status, to_status) of each notification of the entitlement."""
    payloads = [json.loads(n.payload) for n in rt.notification_store.all_for(entitlement_id)]
    return [(p["type"], p["data"]["from_status"], p["data"]["to_status"]) for p in payloads]


# -- a status change that renews is notified as one ---------------------------------------


def test_turning_auto_renew_on_for_an_expired_grant_announces_its_reactivation(
    runtime: Runtime,
) -> None:
    # A one-day term that ended three days ago: reopening renews it four times.
    ent = grant(
        runtime,
        starts_at=NOW - timedelta(days=4, hours=1),
        ends_at=NOW - timedelta(days=3, hours=1),
    )
    assert ent.status == Status.EXPIRED
    change = EntitlementChange(row_version=ent.row_version, auto_renew=True)
    runtime.catalog.update_entitlement("acme", ent.id, change, NOW)

    steps = [(t.from_status, t.to_status) for t in runtime.transitions.history(ent.id)]
    assert ("EXPIRED", "ACTIVE") in steps  # the audit trail has the reactivation
    assert ("entitlement.status_changed", "EXPIRED", "ACTIVE") in notified(runtime, ent.id)


def test_a_summarised_reactivation_is_announced_as_a_status_change(runtime: Runtime) -> None:
    # Ended in 1990: the reopening renewal is one summary of ~13,000 terms.
    start = NOW.replace(year=1990)
    ent = grant(runtime, starts_at=start, ends_at=start + timedelta(days=1))
    change = EntitlementChange(row_version=ent.row_version, auto_renew=True)
    runtime.catalog.update_entitlement("acme", ent.id, change, NOW)
    kinds = notified(runtime, ent.id)
    assert ("entitlement.status_changed", "EXPIRED", "ACTIVE") in kinds
    assert [k for k, *_ in kinds].count("entitlement.renewed") <= 1  # still no storm


# -- the history walk and the resolution views look at the late window only ---------------


def hourly_view(periods: int) -> EntitlementView:
    """A renewing hourly grant that stored every one of its ``periods`` terms, the last
    ending after NOW."""
    anchor = NOW - (periods - 1) * HOUR
    stored = tuple(Period(anchor + i * HOUR, anchor + (i + 1) * HOUR, None) for i in range(periods))
    return EntitlementView(
        id=uuid.uuid4(), number=1, priority=0, status=Status.ACTIVE,
        billing_type=BillingType.PRE_PAID, quantity=None, starts_at=anchor,
        ends_at=stored[-1].end, grace_until=None, periods=stored,
        renewal=Renewal(anchor, Term(length=HOUR), None),
    )  # fmt: skip


def test_the_periods_history_walk_looks_at_the_periods_of_its_window_not_the_whole_history(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []
    real = balance_module.period_at

    def counting(view: EntitlementView, moment: Any) -> Period | None:
        seen.append(len(view.periods))
        return real(view, moment)

    monkeypatch.setattr(balance_module, "period_at", counting)
    view = hourly_view(3 * 8760)  # three years of hourly terms
    since = NOW - timedelta(days=2)
    walked = balance_module.periods_open_since(view, since, NOW)
    assert [p.start for p in walked] == [p.start for p in view.periods if p.end > since]  # type: ignore[operator]
    # Each step judged among the ~49 periods of the window, not 26,280 (a year-old
    # hourly grant took 1.2 s of CPU per GET /periods, three years 3.7 s).
    assert max(seen) <= len(walked) + 1


class CountingSession(Session):
    """Counts the rows each statement over usage_periods returned."""

    fetched: ClassVar[list[int]] = []

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        result = super().execute(statement, *args, **kwargs)
        if "usage_periods" in str(statement):
            frozen = result.freeze()
            CountingSession.fetched.append(len(frozen.data))
            return frozen()
        return result


def test_resolution_views_read_only_the_periods_of_the_late_window_from_the_database(
    runtime: Runtime,
) -> None:
    ent = runtime.catalog.create_entitlement(
        NewEntitlement(
            org="acme", customer_id="cust-1", feature="api_calls", quantity=Decimal(10),
            starts_at=NOW - timedelta(days=10), auto_renew=True, term=Term.of(1, TermUnit.DAY),
        ),
        NOW,
    )  # fmt: skip
    recent = len(runtime.usage.periods_of(ent.id))
    # Two hundred days of history a year ago (as an hourly grant stores in 8 days).
    old = [
        {
            "id": uuid.uuid4(),
            "org_id": "acme",
            "entitlement_id": ent.id,
            "period_start": NOW - timedelta(days=400 - i),
            "period_end": NOW - timedelta(days=399 - i),
            "quantity": Decimal(10),
            "consumed": Decimal(1),
            "updated_at": NOW,
        }
        for i in range(200)
    ]
    with runtime.database.sessions.begin() as s:
        s.execute(UsagePeriod.__table__.insert(), old)
    counting = sessionmaker(bind=runtime.database.engine, class_=CountingSession)
    CountingSession.fetched = []
    store = ResolutionViewStore(counting)
    ((views, _),) = store.views(
        [("acme", "cust-1", "api_calls")], usable_after=NOW - runtime.late_window
    ).values()
    assert len(views[0].periods) == recent  # what ingest needs, as before
    assert sum(CountingSession.fetched) <= recent
