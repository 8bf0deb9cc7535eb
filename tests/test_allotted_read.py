"""The parent's value read shows what it allotted (issue 23 item 5, CONTRACT 6b):
``allotted`` per entitlement and summed over the usable ones, what its live (not
TERMINATED) children hold. The value read answers from Redis when the customer's
resolution data is cached, so the figure travels in that data: a carve and a
child's termination rewrite the parent's entry, and the database fallback
(``BalanceService.balances``) shows the same figure."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterd.core.lifecycle import OperatorAction
from meterd.runtime import Runtime
from meterd.services.balance import RealTimeValue, value_of
from meterd.storage.database import make_engine

from .conftest import NOW
from .helpers import grant

CLOSED_PORT = "postgresql://nobody@127.0.0.1:1/none"


def cached(rt: Runtime, customer: str = "provider", at: datetime = NOW) -> RealTimeValue:
    """The value read as the route makes it: from Redis when cached."""
    value = rt.balance.value("acme", customer, "api_calls", at)
    assert rt.balance.live("acme", customer, "api_calls", at) is not None  # it was cached
    return value


def from_database(rt: Runtime, customer: str = "provider", at: datetime = NOW) -> RealTimeValue:
    """The fallback: the balances read from the database."""
    return value_of(rt.balance.balances("acme", customer, "api_calls", at))


def allot(rt: Runtime, parent: Any, customer: str, quantity: Decimal | int) -> Any:
    return rt.allotments.allot("acme", parent.id, customer, Decimal(quantity), NOW).child


@pytest.mark.parametrize("read", [cached, from_database], ids=["cached", "database"])
def test_a_carve_shows_as_allotted_and_lowers_remaining(runtime: Runtime, read: Any) -> None:
    parent = grant(runtime, "provider", quantity="100")
    assert read(runtime).remaining == Decimal(100)
    allot(runtime, parent, "child-1", 30)
    value = read(runtime)
    assert (value.allotted, value.remaining) == (Decimal(30), Decimal(70))
    [row] = value.balances
    assert (row.entitlement_id, row.allotted, row.remaining) == (parent.id, 30, 70)


@pytest.mark.parametrize("read", [cached, from_database], ids=["cached", "database"])
def test_a_second_carve_adds_to_allotted(runtime: Runtime, read: Any) -> None:
    parent = grant(runtime, "provider", quantity="100")
    allot(runtime, parent, "child-1", 30)
    allot(runtime, parent, "child-2", Decimal("12.5"))
    value = read(runtime)
    assert (value.allotted, value.remaining) == (Decimal("42.5"), Decimal("57.5"))


@pytest.mark.parametrize("read", [cached, from_database], ids=["cached", "database"])
def test_terminating_a_child_drops_allotted_at_once(runtime: Runtime, read: Any) -> None:
    parent = grant(runtime, "provider", quantity="100")
    first = allot(runtime, parent, "child-1", 30)
    allot(runtime, parent, "child-2", 20)
    cached(runtime)  # the parent's entry is in Redis before the child's termination
    runtime.catalog.change_status(first.id, OperatorAction.TERMINATE, NOW, reason="left")
    value = read(runtime)
    # the carve is not given back: the parent's limit stays where the carves left it
    assert (value.allotted, value.remaining) == (Decimal(20), Decimal(50))


@pytest.mark.parametrize("read", [cached, from_database], ids=["cached", "database"])
def test_voiding_every_child_leaves_zero_allotted_not_null(runtime: Runtime, read: Any) -> None:
    parent = grant(runtime, "provider", quantity="100")
    child = allot(runtime, parent, "child-1", 30)
    cached(runtime)
    runtime.catalog.void_entitlement(child.id, NOW, reason="refund")
    value = read(runtime)
    assert (value.allotted, value.balances[0].allotted) == (Decimal(0), Decimal(0))


@pytest.mark.parametrize("read", [cached, from_database], ids=["cached", "database"])
def test_a_void_dated_ahead_drops_allotted_once_the_job_records_it(
    runtime: Runtime, read: Any
) -> None:
    parent = grant(runtime, "provider", quantity="100")
    child = allot(runtime, parent, "child-1", 30)
    runtime.catalog.void_entitlement(child.id, NOW, at=NOW + timedelta(hours=1))
    assert read(runtime).allotted == Decimal(30)  # still live, as the list says
    later = NOW + timedelta(hours=2)
    cached(runtime, at=later)  # the parent's entry is in Redis before the job runs
    assert runtime.lifecycle.advance_all(later).by_target == {"TERMINATED": 1}
    assert runtime.allotments.allotted([parent.id]) == {}
    assert read(runtime, at=later).allotted == Decimal(0)


@pytest.mark.parametrize("read", [cached, from_database], ids=["cached", "database"])
def test_an_entitlement_that_never_allotted_shows_null(runtime: Runtime, read: Any) -> None:
    parent = grant(runtime, "provider", quantity="100")
    child = allot(runtime, parent, "child-1", 30)
    value = read(runtime, "child-1")
    assert value.allotted is None
    assert [(b.entitlement_id, b.allotted) for b in value.balances] == [(child.id, None)]


def test_the_sum_counts_only_entitlements_that_allotted(runtime: Runtime) -> None:
    parent = grant(runtime, "provider", quantity="100")
    other = grant(runtime, "provider", quantity="10")
    allot(runtime, parent, "child-1", 30)
    value = cached(runtime)
    shown = {b.entitlement_id: b.allotted for b in value.balances}
    assert shown == {parent.id: Decimal(30), other.id: None}
    assert (value.allotted, value.remaining) == (Decimal(30), Decimal(80))


def test_a_suspended_childs_carve_still_counts(runtime: Runtime) -> None:
    parent = grant(runtime, "provider", quantity="100")
    child = allot(runtime, parent, "child-1", 30)
    runtime.catalog.change_status(child.id, OperatorAction.SUSPEND, NOW, reason="unpaid")
    assert cached(runtime).allotted == Decimal(30)


@pytest.fixture
def take_database_down(runtime: Runtime) -> Iterator[Any]:
    """Call it to take the database down (until the end of the test): every store's
    next session fails to connect (as ``tests/api/test_database_down.py`` does)."""
    sessions = runtime.database.sessions
    dead = make_engine(CLOSED_PORT)
    yield lambda: sessions.configure(bind=dead)
    sessions.configure(bind=runtime.database.engine)
    dead.dispose()


def test_the_value_read_shows_allotted_with_the_database_down(
    runtime: Runtime, take_database_down: Any
) -> None:
    parent = grant(runtime, "provider", quantity="100")
    allot(runtime, parent, "child-1", 30)
    cached(runtime)
    take_database_down()
    value = runtime.balance.value("acme", "provider", "api_calls", NOW)
    assert (value.allotted, value.remaining) == (Decimal(30), Decimal(70))
    assert value.balances[0].allotted == Decimal(30)
