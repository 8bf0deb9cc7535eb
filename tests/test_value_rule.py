"""The value rule (``services.balance.value_of``): access, the state that decides it,
and the totals over usable entitlements, decided without HTTP."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from meterd.core.domain import Balance, EffectiveState
from meterd.services.balance import NO_ENTITLEMENT, RealTimeValue, value_of

START = datetime(2026, 1, 1, tzinfo=UTC)


def balance(
    quantity: str | None,
    consumed: str = "0",
    *,
    state: EffectiveState = EffectiveState.ACTIVE,
    usable: bool = True,
) -> Balance:
    return Balance(
        entitlement_id=uuid.uuid4(),
        period_start=START,
        period_end=None,
        quantity=None if quantity is None else Decimal(quantity),
        consumed=Decimal(consumed),
        flushed=None,
        pending=None,
        state=state,
        usable=usable,
    )


def test_no_entitlement_means_no_access_and_its_own_state() -> None:
    value = value_of([])
    assert (value.has_access, value.state, value.quantity) == (False, NO_ENTITLEMENT, Decimal(0))


def test_totals_sum_the_usable_entitlements_only() -> None:
    value = value_of([balance("10", "4"), balance("5", "1"), balance("100", "7", usable=False)])
    assert (value.quantity, value.consumed, value.remaining) == (15, 5, 10)
    assert value.has_access and value.state == "ACTIVE"


def test_one_unlimited_usable_entitlement_makes_the_total_unlimited() -> None:
    value = value_of([balance("10", "4"), balance(None, "3")])
    assert (value.quantity, value.remaining, value.consumed) == (None, None, 7)


def test_every_usable_entitlement_exhausted_is_exhausted_without_access() -> None:
    used_up = balance("5", "5", state=EffectiveState.EXHAUSTED)
    value = value_of([used_up, balance("1", "0", state=EffectiveState.EXPIRED, usable=False)])
    assert (value.has_access, value.state) == (False, "EXHAUSTED")


def test_nothing_usable_shows_the_first_entitlements_state() -> None:
    value = value_of([balance("5", state=EffectiveState.PENDING, usable=False)])
    assert (value.has_access, value.state) == (False, "PENDING")


def test_the_first_open_usable_entitlement_decides_the_state() -> None:
    grace = balance("5", state=EffectiveState.GRACE)
    value = value_of([balance("5", "5", state=EffectiveState.EXHAUSTED), grace])
    assert (value.has_access, value.state) == (True, "GRACE")


def test_overage_sums_over_the_usable_entitlements() -> None:
    assert value_of([balance("5", "7"), balance("2", "3")]).overage == 3


def test_the_value_is_frozen_and_keeps_every_balance_in_order() -> None:
    balances = [balance("1"), balance("2", usable=False)]
    value = value_of(balances)
    assert value.balances == tuple(balances)
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.has_access = True  # type: ignore[misc]
    assert isinstance(value, RealTimeValue)
