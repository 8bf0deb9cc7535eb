"""Control characters (NUL above all: PostgreSQL text refuses it) in any request text
get a 400 naming the field, never a 500 from the database."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from ..helpers import grant

NUL = "\x00"


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("GET", "/v1/entitlements", {"search": NUL}, None),
        ("GET", "/v1/entitlements", {"customer": "a" + NUL}, None),
        ("GET", "/v1/entitlements", {"contract_id__in": "k,\x01"}, None),
        ("GET", "/v1/customers/c%00/features/api_calls", None, None),
        ("GET", "/entitlements/customer/unique/cust-1", {"search": NUL}, None),
        ("GET", "/entitlements/customer/unique/c%00", None, None),
        ("GET", "/entitlements/customer/unique/cust-1", {"customer": NUL}, None),
        ("GET", "/api/web/v4/tenants/t%00/entitlements/USERS", None, None),
        ("GET", "/api/workspace/entitlement-operations/entitlements", {"Search": NUL}, None),
        ("POST", "/v1/entitlements", None, {"customer_id": NUL, "feature": "api_calls"}),
        ("POST", "/v1/features", None, {"key": "f", "description": "a" + NUL}),
        ("POST", "/v1/plans", None, {"key": "p", "feature": "api_calls", "display_name": NUL}),
        ("PATCH", "/v1/features/api_calls", None, {"name": NUL}),
    ],
)
def test_control_characters_in_request_text_are_a_clear_400(
    client: TestClient,
    acme: dict[str, str],
    method: str,
    path: str,
    params: dict[str, str] | None,
    body: Any,
) -> None:
    headers = {**acme, "organisation": "acme"}
    response = client.request(method, path, params=params, json=body, headers=headers)
    assert response.status_code == 400, response.text


def test_a_nul_in_a_status_change_reason_is_400(
    client: TestClient, runtime: Any, acme: dict[str, str]
) -> None:
    ent = grant(runtime)
    response = client.post(
        f"/v1/entitlements/{ent.id}/suspend", json={"reason": "x" + NUL}, headers=acme
    )
    assert response.status_code == 400
