"""``client.hold(...)``: a context manager that settles what the work used, or
releases the hold when the block ends without a settle (or with an exception)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from meterd.client import MeterdClient
from meterd.core.errors import InvalidError
from meterd.core.timeutil import utcnow
from meterd.hold_client import HoldClient, HoldDeniedError
from meterd.runtime import Runtime

from ..helpers import grant

VALUE = "/v1/customers/cust-1/features/api_calls"


@pytest.fixture
def holds(client: TestClient, runtime: Runtime, acme: dict[str, str]) -> HoldClient:
    now = utcnow()
    grant(
        runtime,
        quantity="10",
        starts_at=now - timedelta(days=1),
        ends_at=now + timedelta(days=9),
        now=now,
    )
    client.headers.update(acme)
    return HoldClient(http=client, retry_backoff=0)


def _figures(client: TestClient) -> tuple[str, str, str]:
    value = client.get(VALUE).json()
    return value["consumed"], value["held"], value["remaining"]


def test_a_hold_settled_in_the_block_consumes_what_was_settled(
    holds: HoldClient, client: TestClient
) -> None:
    with holds.hold("cust-1", "api_calls", 8, seconds=60) as hold:
        assert _figures(client) == ("0", "8", "2")
        hold.settle(5)
    assert _figures(client) == ("5", "0", "5")


def test_a_block_left_without_a_settle_releases_the_hold(
    holds: HoldClient, client: TestClient
) -> None:
    with holds.hold("cust-1", "api_calls", 8, seconds=60) as hold:
        pass
    assert hold.hold is not None and hold.hold["status"] == "released"
    assert _figures(client) == ("0", "0", "10")


def test_an_exception_in_the_block_releases_the_hold(holds: HoldClient, client: TestClient) -> None:
    with pytest.raises(RuntimeError), holds.hold("cust-1", "api_calls", 8, seconds=60):
        raise RuntimeError("the model timed out")
    assert _figures(client) == ("0", "0", "10")


def test_a_denied_hold_raises_before_the_work_starts(holds: HoldClient, client: TestClient) -> None:
    with (
        pytest.raises(HoldDeniedError, match="denied"),
        holds.hold("cust-1", "api_calls", 11, seconds=60),
    ):
        pytest.fail("the block must not run")
    assert _figures(client) == ("0", "0", "10")


def test_a_client_over_celery_refuses_holds() -> None:
    class Nowhere:
        def send(self, events: list[dict[str, object]]) -> None:
            raise AssertionError("nothing is sent")

    client = MeterdClient(Nowhere(), org="acme", source="app")
    try:
        with pytest.raises(InvalidError, match="over_http"):
            client.hold("cust-1", "api_calls", 1, seconds=60)
    finally:
        client.close()
