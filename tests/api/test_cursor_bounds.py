"""Issue 11: cursors are opaque but not signed, so a forged one must answer 400 like
a garbled one, never a 500 (or a 503 from a database that refused its value)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.runtime import Runtime

from ..helpers import grant

ROW = "00000000-0000-0000-0000-000000000001"


def forged(sort: str, value: Any, row_id: Any = ROW) -> str:
    """A cursor written like meterd writes them, with any content."""
    doc = {"s": sort, "v": value, "i": row_id, "f": True}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def listing(client: TestClient, acme: dict[str, str], sort_key: str, cursor: str) -> Any:
    params = {"sort_key": sort_key, "cursor": cursor}
    return client.get("/v1/entitlements", params=params, headers=acme)


@pytest.mark.parametrize(
    ("sort_key", "value"),
    [
        ("number", ["i", 2**63]),
        ("number", ["i", -(2**63) - 1]),
        ("number", ["s", "abc"]),
        ("number", ["b", True]),
        ("number", ["i", [1, 2]]),
        ("number", ["i", "1"]),
        ("id", ["s", "zz"]),
        ("customer_id", ["s", "a\x00b"]),
        ("customer_id", ["s", "c" * 1001]),
        ("customer_id", ["n", None]),
        ("created_at", ["t", "9999-12-31T23:59:59-01:00"]),
        ("created_at", ["t", "0001-01-01T00:00:00+01:00"]),
        ("created_at", ["t", "2026-01-01T00:00:00"]),
        ("starts_at", ["i", 1]),
        ("starts_at", ["d", "NaN"]),
        ("starts_at", ["d", "x"]),
        ("starts_at", ["q", 1]),
        ("starts_at", ["t"]),
    ],
    ids=lambda value: str(value)[:40],
)
def test_a_cursor_whose_value_meterd_could_not_have_written_is_400(
    client: TestClient, runtime: Runtime, acme: dict[str, str], sort_key: str, value: Any
) -> None:
    grant(runtime)
    response = listing(client, acme, sort_key, forged(f"{sort_key}:asc", value))
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == (
        "the cursor is not valid: pass back a next or previous value"
    )


@pytest.mark.parametrize("row_id", ["x", 7, None, ["a"], "0" * 33])
def test_a_cursor_whose_row_id_is_not_a_uuid_is_400(
    client: TestClient, runtime: Runtime, acme: dict[str, str], row_id: Any
) -> None:
    grant(runtime)
    response = listing(client, acme, "number", forged("number:asc", ["i", 1], row_id))
    assert response.status_code == 400, response.text
    assert "the cursor is not valid" in response.json()["detail"]


def test_a_forged_cursor_with_a_value_of_the_right_type_reads_from_there(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    for _ in range(3):
        grant(runtime)
    last_of_number_1 = "ffffffff-ffff-ffff-ffff-ffffffffffff"
    response = listing(client, acme, "number", forged("number:asc", ["i", 1], last_of_number_1))
    assert response.status_code == 200, response.text
    assert [row["number"] for row in response.json()["results"]] == [2, 3]


def test_a_zenskar_cursor_whose_row_id_is_not_a_uuid_is_400(
    client: TestClient, acme: dict[str, str]
) -> None:
    response = client.get(
        "/entitlements/customer/unique/cust-1",
        params={"cursor": forged("name:asc", ["n", None], "x")},
        headers={**acme, "organisation": "acme"},
    )
    assert response.status_code == 400, response.text
    assert "the cursor is not valid" in response.json()["detail"]
