"""The value read keeps the resolution data it decoded (``balance.KeptResolutions``)
and sends its ``GET`` again in the round trip of the totals it names: one round
trip for a customer read before. The kept data is never trusted alone: data
changed or gone since is read again, and the answer is the new data's. The hot
routes answer their model's JSON without FastAPI validating it again: the bytes
still validate against the model and are its serialization."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from meterd.api.holds import SettleResponse
from meterd.api.usage import FeatureValue, ReserveResponse
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.balance import KeptResolutions
from meterd.services.catalog import EntitlementChange

from ..helpers import grant
from .conftest import key_for

VALUE = "/v1/customers/cust-1/features/api_calls"
RESERVE = VALUE + "/reserve"


@pytest.fixture
def granted(runtime: Runtime) -> Any:
    now = utcnow()
    return grant(
        runtime, quantity="10", starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=30)
    )


class GetsAlone:
    """Counts the resolution ``GET``s sent alone (``CounterStore.resolution_entry``)."""

    def __init__(self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        entry = runtime.counters.resolution_entry

        def counted(*args: Any) -> str | None:
            self.calls += 1
            return entry(*args)

        monkeypatch.setattr(runtime.counters, "resolution_entry", counted)


def test_a_customer_read_before_is_read_in_one_round_trip(
    client: TestClient, runtime: Runtime, granted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = key_for(runtime, "acme")
    gets = GetsAlone(runtime, monkeypatch)
    assert client.get(VALUE, headers=headers).json()["quantity"] == "10"
    assert gets.calls == 1  # the first read decodes it
    for _ in range(3):
        assert client.get(VALUE, headers=headers).json()["quantity"] == "10"
    assert gets.calls == 1
    assert len(runtime.balance.kept) == 1


def test_data_changed_since_it_was_kept_is_read_again(
    client: TestClient, runtime: Runtime, granted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = key_for(runtime, "acme")
    assert client.get(VALUE, headers=headers).json()["quantity"] == "10"
    gets = GetsAlone(runtime, monkeypatch)
    runtime.catalog.update_entitlement(
        "acme",
        granted.id,
        EntitlementChange(row_version=granted.row_version, quantity=Decimal(25)),
        utcnow(),
    )
    assert client.get(VALUE, headers=headers).json()["quantity"] == "25"
    assert gets.calls == 1  # the kept data did not match: read again
    assert client.get(VALUE, headers=headers).json()["quantity"] == "25"
    assert gets.calls == 1


def test_data_gone_since_it_was_kept_is_loaded_again(
    client: TestClient, runtime: Runtime, granted: Any
) -> None:
    headers = key_for(runtime, "acme")
    assert client.get(VALUE, headers=headers).json()["consumed"] == "0"
    reserved = client.post(RESERVE, json={"quantity": "4", "idempotency_key": "a"}, headers=headers)
    assert reserved.json()["value"]["consumed"] == "4"
    runtime.redis.delete(runtime.redis_keys.resolution("acme", "cust-1", "api_calls"))
    assert client.get(VALUE, headers=headers).json()["consumed"] == "4"


def test_a_new_entitlement_shows_at_once(
    client: TestClient, runtime: Runtime, granted: Any
) -> None:
    headers = key_for(runtime, "acme")
    assert client.get(VALUE, headers=headers).json()["quantity"] == "10"
    now = utcnow()
    grant(runtime, quantity="5", starts_at=now - timedelta(hours=1), ends_at=None, now=now)
    value = client.get(VALUE, headers=headers).json()
    assert value["quantity"] == "15"
    assert len(value["entitlements"]) == 2


def test_at_most_the_limit_is_kept_the_oldest_going_first() -> None:
    kept = KeptResolutions(limit=2)
    for name in ("a", "b", "c"):
        kept.keep(("org", name, "f"), name.encode(), [])
    assert len(kept) == 2
    assert kept.get(("org", "a", "f")) is None
    assert kept.get(("org", "c", "f")) == (b"c", [])
    kept.keep(("org", "b", "f"), b"b2", [])  # kept again: now the newest
    kept.keep(("org", "d", "f"), b"d", [])
    assert kept.get(("org", "c", "f")) is None
    assert kept.get(("org", "b", "f")) == (b"b2", [])


def _is_its_serialization(model: type[BaseModel], body: bytes) -> None:
    assert model.model_validate_json(body).model_dump_json().encode() == body


def test_the_hot_routes_answer_valid_json_of_their_model(
    client: TestClient, runtime: Runtime, granted: Any
) -> None:
    headers = key_for(runtime, "acme")
    value = client.get(VALUE, headers=headers)
    assert value.headers["content-type"] == "application/json"
    _is_its_serialization(FeatureValue, value.content)
    body = {"quantity": "2.5", "idempotency_key": "h", "hold_seconds": 60}
    reserved = client.post(RESERVE, json=body, headers=headers)
    _is_its_serialization(ReserveResponse, reserved.content)
    hold = reserved.json()["hold"]["id"]
    settled = client.post(f"/v1/holds/{hold}/settle", json={"quantity": "1.5"}, headers=headers)
    assert settled.status_code == 200
    _is_its_serialization(SettleResponse, settled.content)
    assert settled.json()["hold"]["settled_quantity"] == "1.5"
