"""A state machine over holds, settles, releases, expiries (a moving clock),
reserves, usage and flushes on two PRE_PAID grants, held to a plain model:

* nothing is ever granted past the room left (quantity less consumed and held): the
  value's ``consumed + held`` never passes the grants' quantity;
* a hold or reservation is granted exactly when the model's room covers it;
* every settled unit is counted once (a settle retried counts nothing more);
* nothing is held after its expiry, whether or not anything ran at that instant;
* after a flush the event log equals the periods.

Usage and settles are drawn within the room left, so no overage is made and the
room of the two grants is simply what is left of their sum. Each run uses a
customer of its own; the clock starts at the real one (Redis expires a hold's
record by its own clock).
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from meterd.core.events import UsageEvent
from meterd.core.holds import HoldStatus
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.holds import HoldStateError
from meterd.services.reserve import Reservation, ReserveOutcome

from .helpers import assert_log_matches_periods, grant

QUANTITY = 10  # each of the two grants
TOTAL = 2 * QUANTITY
_runs = itertools.count()


@dataclass
class ModelHold:
    id: uuid.UUID
    quantity: int
    expires_at: datetime
    status: HoldStatus = HoldStatus.HELD
    settled: int | None = None


class Holds(RuleBasedStateMachine):
    #: The runtime of the test that runs the machine.
    rt: Runtime

    @initialize()
    def start(self) -> None:
        self.customer = f"model-{next(_runs)}"
        self.now = utcnow()
        for priority in (0, 1):
            grant(
                self.rt,
                customer=self.customer,
                quantity=str(QUANTITY),
                starts_at=self.now - timedelta(days=1),
                ends_at=self.now + timedelta(days=30),
                now=self.now,
                priority=priority,
            )
        self.consumed = 0
        self.holds: list[ModelHold] = []
        self.keys = itertools.count()

    # -- the model --------------------------------------------------------------
    def held(self) -> int:
        return sum(
            h.quantity
            for h in self.holds
            if h.status is HoldStatus.HELD and self.now < h.expires_at
        )

    def room(self) -> int:
        return TOTAL - self.consumed - self.held()

    def request(self, quantity: int) -> Reservation:
        key = f"k{next(self.keys)}"
        return Reservation("acme", self.customer, "api_calls", Decimal(quantity), key)

    # -- the rules ---------------------------------------------------------------
    @rule(quantity=st.integers(1, 12), seconds=st.integers(1, 120))
    def hold(self, quantity: int, seconds: int) -> None:
        fits = quantity <= self.room()
        result = self.rt.holds.hold(self.request(quantity), seconds, self.now)
        assert result.outcome.granted == fits, (quantity, self.room(), result.outcome)
        if result.hold is not None:
            expires = self.now + timedelta(seconds=seconds)
            self.holds.append(ModelHold(result.hold.id, quantity, expires))

    @rule(quantity=st.integers(1, 12))
    def reserve(self, quantity: int) -> None:
        fits = quantity <= self.room()
        outcome = self.rt.reserve.reserve(self.request(quantity), self.now)
        assert (outcome is ReserveOutcome.GRANTED) == fits
        if fits:
            self.consumed += quantity

    @rule(quantity=st.integers(1, 12))
    def use(self, quantity: int) -> None:
        quantity = min(quantity, self.room())
        if quantity == 0:
            return
        event = UsageEvent(
            "acme",
            self.customer,
            "api_calls",
            "model",
            f"{self.customer}-u{next(self.keys)}",
            self.now,
            Decimal(quantity),
            None,
        )
        self.rt.counting.count([event], self.now)
        self.consumed += quantity

    @rule(pick=st.integers(0, 1000), extra=st.integers(-12, 12))
    def settle(self, pick: int, extra: int) -> None:
        if not self.holds:
            return
        hold = self.holds[pick % len(self.holds)]
        live = hold.status is HoldStatus.HELD and self.now < hold.expires_at
        if hold.status is HoldStatus.SETTLED:
            assert hold.settled is not None
            again = self.rt.holds.settle("acme", hold.id, Decimal(hold.settled), self.now)
            assert not again.settled_now  # a retry counts nothing more
            return
        # within what it holds plus the room left: no overage
        quantity = max(0, min(hold.quantity + extra, hold.quantity + self.room()))
        if not live:
            with pytest.raises(HoldStateError):
                self.rt.holds.settle("acme", hold.id, Decimal(quantity), self.now)
            return
        result = self.rt.holds.settle("acme", hold.id, Decimal(quantity), self.now)
        assert result.settled_now
        hold.status, hold.settled = HoldStatus.SETTLED, quantity
        self.consumed += quantity

    @rule(pick=st.integers(0, 1000))
    def release(self, pick: int) -> None:
        if not self.holds:
            return
        hold = self.holds[pick % len(self.holds)]
        live = hold.status is HoldStatus.HELD and self.now < hold.expires_at
        if live or hold.status is HoldStatus.RELEASED:
            assert self.rt.holds.release("acme", hold.id, self.now).status is HoldStatus.RELEASED
            hold.status = HoldStatus.RELEASED
        else:
            with pytest.raises(HoldStateError):
                self.rt.holds.release("acme", hold.id, self.now)

    @rule(seconds=st.integers(1, 90))
    def wait(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule()
    def flush(self) -> None:
        self.rt.flush.flush_all(self.now)
        assert_log_matches_periods(self.rt)

    @rule()
    def tidy(self) -> None:
        self.rt.holds.expire_due(self.now)

    # -- what must hold after every step -------------------------------------
    @invariant()
    def figures_agree_with_the_model(self) -> None:
        if not hasattr(self, "customer"):
            return
        value = self.rt.balance.value("acme", self.customer, "api_calls", self.now)
        assert (value.consumed, value.held) == (Decimal(self.consumed), Decimal(self.held()))
        assert value.consumed + value.held <= TOTAL
        assert value.overage == 0


def test_holds_settles_releases_and_expiries_agree_with_the_model(runtime: Runtime) -> None:
    Holds.rt = runtime
    run_state_machine_as_test(
        Holds,
        settings=settings(
            max_examples=100,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
