"""One state at every instant: for random entitlements, operator actions and instants, the
value read (Redis), the database read, the list rows, the list's status filter and the
state function all agree, before the lifecycle job has run and after it."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterd.core.domain import Status
from meterd.core.filters import Filter, Op
from meterd.core.lifecycle import OperatorAction, TransitionRefused, status_at
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.storage.resolution_views import entitlement_view, suspensions_of

from .conftest import NOW

DAY = timedelta(days=1)
#: Each example starts this much later than the one before (more than it spans).
EXAMPLE_SHIFTS = (k * 2000 * DAY for k in itertools.count())


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    starts = NOW + draw(st.integers(-90, 30)) * DAY + draw(st.integers(0, 23)) * timedelta(hours=1)
    length = draw(st.one_of(st.none(), st.integers(1, 120)))
    renewing = length is not None and draw(st.booleans())
    actions: list[tuple[OperatorAction, timedelta]] = []
    if draw(st.booleans()):
        actions.append((OperatorAction.SUSPEND, draw(st.integers(1, 20)) * DAY))
        if draw(st.booleans()):
            actions.append((OperatorAction.RESUME, draw(st.integers(1, 20)) * DAY))
    if draw(st.booleans()):
        actions.append((OperatorAction.TERMINATE, draw(st.integers(1, 20)) * DAY))
    return {
        "starts_at": starts,
        "ends_at": starts + length * DAY if length else None,
        "grace": draw(st.integers(0, 10)) * DAY or None,
        "auto_renew": renewing,
        "actions": actions,
        "later": draw(st.integers(0, 400)) * timedelta(hours=6),
    }


def reads_agree(rt: Runtime, customer: str, ent_id: uuid.UUID, at: object) -> Status:
    """Every reader's status of the entitlement at ``at``; asserts they are one."""
    ent = rt.entitlements.get(ent_id)
    with rt.database.sessions() as s:
        suspensions = suspensions_of(s, [ent_id]).get(ent_id, ())
    view = entitlement_view(ent, rt.usage.periods_of(ent_id), suspensions, scale=6)
    clock = status_at(view, at)  # type: ignore[arg-type]
    ((_, _, listed),) = rt.queries.with_balances([(ent, "api_calls")], at)
    assert listed.status == clock, (listed.status, clock)
    database = rt.balance.balances("acme", customer, "api_calls", at)  # type: ignore[arg-type]
    rt.resolution.refresh([("acme", customer, "api_calls")], at)  # type: ignore[arg-type]
    live = rt.balance.live("acme", customer, "api_calls", at)  # type: ignore[arg-type]
    assert live is not None
    if not database:
        # Over for longer than the late window: no usage can land on it any more, so
        # the value read leaves it out.
        over = view.usable_until
        assert live == [] and over is not None and over <= at - rt.late_window  # type: ignore[operator]
    else:
        ((db,), (cached,)) = (database, live)
        assert db.status == cached.status == clock, (db.status, cached.status, clock)
        assert db.usable == cached.usable == (clock in (Status.ACTIVE, Status.GRACE))
    for status in Status:
        page = rt.listing.page(
            "acme",
            [Filter("customer_id", Op.EQ, customer), Filter("status", Op.EQ, status.value)],
            sort="number", descending=False, cursor=None, limit=5, now=at,  # type: ignore[arg-type]
        )  # fmt: skip
        assert (page.total == 1) == (status is clock), (status, clock)
    return clock


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_every_reader_agrees_with_the_state_function_with_and_without_the_job(
    runtime: Runtime, scenario: dict[str, object]
) -> None:
    # The examples share one database and the job runs over all of it: each example
    # lives later than every earlier one, as time only moves forward.
    shift = next(EXAMPLE_SHIFTS)
    scenario = {**scenario, "starts_at": scenario["starts_at"] + shift}  # type: ignore[operator]
    if scenario["ends_at"] is not None:
        scenario["ends_at"] = scenario["ends_at"] + shift  # type: ignore[operator]
    customer = f"c-{uuid.uuid4().hex[:10]}"
    ent = runtime.catalog.create_entitlement(
        NewEntitlement(
            org="acme",
            customer_id=customer,
            feature="api_calls",
            quantity=Decimal(10),
            starts_at=scenario["starts_at"],  # type: ignore[arg-type]
            ends_at=scenario["ends_at"],  # type: ignore[arg-type]
            grace=scenario["grace"],  # type: ignore[arg-type]
            auto_renew=scenario["auto_renew"],  # type: ignore[arg-type]
        ),
        NOW + shift,
    )
    moment = NOW + shift
    for action, after in scenario["actions"]:  # type: ignore[attr-defined]
        moment += after
        with contextlib.suppress(TransitionRefused):  # e.g. suspending an expired one
            runtime.catalog.change_status(ent.id, action, moment)
    at = moment + scenario["later"]  # type: ignore[operator]
    before = reads_agree(runtime, customer, ent.id, at)
    runtime.lifecycle.advance_all(at)
    assert reads_agree(runtime, customer, ent.id, at) == before
    recorded = runtime.entitlements.get(ent.id).status
    assert recorded == before.value, "after the job, the recorded status is the clock's"
