"""One state at every instant, over HTTP: for random entitlements and operator actions,
the value read, the list's status and status filter, and the three seed routes (workspace,
Zenskar, tenant) all show the state function's status now, before the lifecycle job has
run and after it (issue 11, "Tests").

The API reads the wall clock, so each example is built around the real now with offsets
of whole hours: no boundary falls inside the milliseconds an example takes."""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meterd.core.domain import FeatureType, Status
from meterd.core.errors import ConflictError
from meterd.core.lifecycle import status_at
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.storage.resolution_views import entitlement_view, suspensions_of

from ..conftest import NOW

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WORKSPACE = "/api/workspace/entitlement-operations/entitlements"
WORKSPACE_CODES = {"PENDING": 0, "ACTIVE": 1, "GRACE": 2, "EXPIRED": 3, "SUSPENDED": 4}
WORKSPACE_CODES["TERMINATED"] = 5
TENANT_STATUS = {Status.ACTIVE: "ACTIVE", Status.GRACE: "ACTIVE", Status.TERMINATED: "TERMINATED"}


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    # Ends are drawn around now (inside or past a grace of up to 10 days, or ahead),
    # starts before them: every status is reached often.
    length = draw(st.integers(1, 24 * 90)) * HOUR
    if draw(st.booleans()):
        ends: timedelta | None = draw(st.integers(-24 * 15, 24 * 30)) * HOUR
        starts = ends - length  # type: ignore[operator]
    else:
        ends, starts = None, draw(st.integers(-24 * 60, 24 * 10)) * HOUR
    return {
        "starts": starts,
        "ends": ends,
        "grace_days": draw(st.integers(0, 10)),
        "auto_renew": ends is not None and draw(st.booleans()),
        "actions": draw(
            st.sampled_from([(), (), (), ("suspend",), ("suspend", "resume"), ("terminate",)])
        ),
    }


def scenario(
    *,
    starts: int,
    ends: int,
    grace_days: int = 0,
    auto_renew: bool = False,
    actions: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A fixed scenario, days from now."""
    return {
        "starts": starts * DAY, "ends": ends * DAY, "grace_days": grace_days,
        "auto_renew": auto_renew, "actions": actions,
    }  # fmt: skip


def clock_status(runtime: Runtime, ent_id: str) -> Status:
    ent = runtime.entitlements.get(uuid.UUID(ent_id))
    with runtime.database.sessions() as s:
        suspensions = suspensions_of(s, [ent.id]).get(ent.id, ())
    view = entitlement_view(ent, runtime.usage.periods_of(ent.id), suspensions, scale=6)
    return status_at(view, utcnow())


def routes_agree(
    client: TestClient, headers: dict[str, str], runtime: Runtime, customer: str, ent_id: str
) -> Status:
    """Every route's status of the customer's one entitlement; asserts they are the clock's."""
    clock = clock_status(runtime, ent_id)
    usable = clock in (Status.ACTIVE, Status.GRACE)

    value = client.get(f"/v1/customers/{customer}/features/seats", headers=headers).json()
    assert value["has_access"] == usable, (value, clock)
    if value["entitlements"]:
        (shown,) = value["entitlements"]
        # Nothing is consumed, so the effective state is the status itself.
        assert (shown["state"], shown["usable"]) == (clock.value, usable), (shown, clock)

    one = client.get(f"/v1/entitlements/{ent_id}", headers=headers).json()
    assert one["status"] == clock.value, (one["status"], clock)
    for status in Status:
        listed = client.get(
            "/v1/entitlements",
            params={"customer_id": customer, "status": status.value},
            headers=headers,
        ).json()
        assert (listed["total_count"] == 1) == (status is clock), (status, clock)

    rows = client.get(
        WORKSPACE, params={"OwnerEntityInstanceId": customer}, headers=headers
    ).json()["Data"]["Items"]
    (row,) = rows
    assert row["Status"] == WORKSPACE_CODES[clock.value], (row["Status"], clock)

    zenskar = client.get(
        f"/entitlements/customer/unique/{customer}", headers={**headers, "organisation": "acme"}
    ).json()
    (group,) = zenskar["results"]
    assert group["total_expired_entitlements"] == (clock is Status.EXPIRED), (group, clock)

    tenant = client.get(
        f"/api/web/v4/tenants/{customer}/entitlements/USERS", headers=headers
    ).json()
    assert tenant["status"] == TENANT_STATUS.get(clock, "INACTIVE"), (tenant["status"], clock)
    return clock


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
# Every status at least once, whatever the draw: in grace, expired, renewed past its end.
@example(scenario=scenario(starts=-30, ends=-2, grace_days=5))
@example(scenario=scenario(starts=-30, ends=-2, grace_days=1))
@example(scenario=scenario(starts=-45, ends=-15, grace_days=0, auto_renew=True))
@example(scenario=scenario(starts=-5, ends=5, actions=("suspend",)))
@example(scenario=scenario(starts=-10, ends=-1, grace_days=5, actions=("suspend", "resume")))
@example(scenario=scenario(starts=-5, ends=5, actions=("terminate",)))
@example(scenario=scenario(starts=3, ends=10))
def test_every_route_shows_the_state_functions_status_with_and_without_the_job(
    client: TestClient, acme: dict[str, str], runtime: Runtime, scenario: dict[str, Any]
) -> None:
    with contextlib.suppress(ConflictError):  # the examples share one database
        runtime.catalog.create_feature("acme", "seats", now=NOW, type=FeatureType.USERS)
    now = utcnow()
    customer = f"c-{uuid.uuid4().hex[:10]}"
    body: dict[str, Any] = {
        "customer_id": customer,
        "feature": "seats",
        "quantity": "10",
        "starts_at": (now + scenario["starts"]).isoformat(),
        "grace_days": scenario["grace_days"],
        "auto_renew": scenario["auto_renew"],
    }
    if scenario["ends"] is not None:
        body["ends_at"] = (now + scenario["ends"]).isoformat()
    made = client.post("/v1/entitlements", json=body, headers=acme)
    assert made.status_code == 201, made.text
    ent_id = made.json()["id"]
    for action in scenario["actions"]:
        # An action the state refuses (suspending an expired grant) is a 409; either
        # way every route must agree afterwards.
        answer = client.post(f"/v1/entitlements/{ent_id}/{action}", headers=acme)
        assert answer.status_code in (200, 409), answer.text

    before = routes_agree(client, acme, runtime, customer, ent_id)
    runtime.lifecycle.advance_all(utcnow())
    assert routes_agree(client, acme, runtime, customer, ent_id) == before
