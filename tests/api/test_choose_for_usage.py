"""choose_for_usage: the grant a read shows is the one usage would burn right now."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from meterd.core.domain import Balance, BillingType
from meterd.services.compat_queries import Grant, choose_for_usage
from meterd.services.values import Entitlement, Feature

START = datetime(2026, 1, 1, tzinfo=UTC)
SOON = datetime(2026, 6, 1, tzinfo=UTC)
LATER = datetime(2027, 1, 1, tzinfo=UTC)
FEATURE = Feature(
    id=uuid.uuid4(),
    org_id="acme",
    key="seats",
    name="seats",
    description="",
    type="USERS",
    units="",
    product_id=None,
    is_active=True,
    created_at=START,
    scale=0,
    aggregation="SUM",
    event_type=None,
    value_property=None,
    meter_filters=None,
)


def row(
    number: int,
    quantity: str | None = "10",
    consumed: str = "0",
    *,
    priority: int = 0,
    ends_at: datetime | None = LATER,
    usable: bool = True,
    billing_type: BillingType = BillingType.PRE_PAID,
) -> Grant:
    ent = Entitlement(
        id=uuid.uuid4(),
        number=number,
        priority=priority,
        status="ACTIVE" if usable else "EXPIRED",
        billing_type=billing_type.value,
        quantity=None if quantity is None else Decimal(quantity),
        starts_at=START,
        ends_at=ends_at,
        grace_until=None,
        org_id="acme",
        customer_id="cust-1",
        feature_id=FEATURE.id,
        plan_id=None,
        contract_id=None,
        contract_mode="PRODUCTION",
        issued_at=START,
        auto_renew=False,
        renewal_quantity=None,
        parent_id=None,
        allotment=None,
        row_version=1,
        created_at=START,
        updated_at=START,
        next_period_at=None,
        term_months=None,
        term_micros=None,
        term_anchor=None,
        terminated_at=None,
        attributes={},
        filters=None,
    )
    balance = Balance(
        entitlement_id=ent.id,
        period_start=START,
        period_end=None,
        quantity=ent.quantity,
        consumed=Decimal(consumed),
        flushed=None,
        pending=None,
        usable=usable,
    )
    return ent, FEATURE, balance


def number_of(chosen: Grant | None) -> int | None:
    return None if chosen is None else chosen[0].number


def test_the_lowest_priority_burns_first_whatever_its_number() -> None:
    assert number_of(choose_for_usage([row(1, priority=2), row(2, priority=1)])) == 2


def test_on_equal_priority_the_soonest_end_burns_first() -> None:
    assert number_of(choose_for_usage([row(1, ends_at=LATER), row(2, ends_at=SOON)])) == 2


def test_an_open_ended_grant_burns_after_every_dated_one() -> None:
    assert number_of(choose_for_usage([row(1, ends_at=None), row(2, ends_at=LATER)])) == 2


def test_on_equal_priority_and_end_the_oldest_burns_first() -> None:
    assert number_of(choose_for_usage([row(2), row(1)])) == 1


def test_a_used_up_grant_is_passed_over_for_the_next_with_room() -> None:
    used_up = row(1, "5", "5", priority=0)
    assert number_of(choose_for_usage([used_up, row(2, "100", "3", priority=1)])) == 2


def test_a_grant_of_quantity_zero_has_no_room() -> None:
    assert number_of(choose_for_usage([row(1, "0"), row(2)])) == 2


def test_an_unlimited_grant_always_has_room() -> None:
    assert number_of(choose_for_usage([row(1, None, "1000000"), row(2)])) == 1


def test_a_pay_per_use_grant_at_its_monthly_quantity_has_no_room() -> None:
    monthly = row(1, "10", "10", billing_type=BillingType.PAY_PER_USE)
    assert number_of(choose_for_usage([monthly, row(2)])) == 2


def test_when_every_usable_grant_is_used_up_overage_lands_on_the_last_in_order() -> None:
    rows = [row(1, "5", "9", priority=1), row(2, "5", "5", priority=0), row(3, "5", "6")]
    assert number_of(choose_for_usage(rows)) == 1


def test_a_grant_usage_cannot_reach_is_never_chosen_over_a_usable_one() -> None:
    ended = row(1, "100", priority=-5, usable=False)
    assert number_of(choose_for_usage([ended, row(2, "5", "5")])) == 2


def test_with_nothing_usable_the_most_recently_issued_grant_is_shown() -> None:
    assert number_of(choose_for_usage([row(3, usable=False), row(7, usable=False)])) == 7


def test_no_grants_choose_nothing() -> None:
    assert choose_for_usage([]) is None
