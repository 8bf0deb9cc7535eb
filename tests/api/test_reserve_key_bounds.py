"""The reserve route's idempotency key has one bound, in the body or the header: a
longer key would make a reservation id the event log cannot hold."""

from __future__ import annotations

from fastapi.testclient import TestClient

from meterd.api.usage import IDEMPOTENCY_KEY_MAX

from ..helpers import detail_of


def test_an_idempotency_key_header_longer_than_200_is_refused(
    client: TestClient, acme: dict[str, str]
) -> None:
    response = client.post(
        "/v1/customers/cust-1/features/api_calls/reserve",
        json={"quantity": "1"},
        headers={**acme, "Idempotency-Key": "k" * (IDEMPOTENCY_KEY_MAX + 1)},
    )
    assert "Idempotency-Key" in detail_of(response)
