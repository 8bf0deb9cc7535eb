"""Issue 11: filter values at and past the edge of what meterd stores answer 400 with a
message naming the bound, never a 500 (or a 503 from a database that refused them).

Both routes that parse Zenskar-style filters (``meterd.core.filters``) are checked: the
Zenskar seed page and the native list. The default backend stores quantities as
integer micro-units in SQLite, the real one as Numeric(38, 6) in PostgreSQL; the
bounds are the same on both.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.core.filters import INT64_MAX, INT64_MIN, MAX_QUANTITY
from meterd.runtime import Runtime

from ..helpers import grant

ZENSKAR = "/entitlements/customer/unique/cust-1"
NATIVE = "/v1/entitlements"
ROUTES = pytest.mark.parametrize("path", [ZENSKAR, NATIVE], ids=["zenskar", "native"])


def answer(client: TestClient, path: str, acme: dict[str, str], query: str) -> Any:
    """GET ``path?query`` (the query is sent as written: ``+`` must be ``%2B``)."""
    return client.get(f"{path}?{query}", headers={**acme, "organisation": "acme"})


def detail_of(response: Any) -> str:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    detail: str = response.json()["detail"]
    return detail


@ROUTES
def test_a_datetime_filter_after_year_9999_in_utc_is_400(
    client: TestClient, acme: dict[str, str], path: str
) -> None:
    detail = detail_of(answer(client, path, acme, "created_at__gt=9999-12-31T23:59:59-01:00"))
    assert detail.startswith("created_at__gt: '9999-12-31T23:59:59-01:00' is out of range")
    assert "0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z" in detail


@ROUTES
def test_a_datetime_filter_before_year_1_in_utc_is_400(
    client: TestClient, acme: dict[str, str], path: str
) -> None:
    detail = detail_of(answer(client, path, acme, "active_from__lt=0001-01-01T00:00:00%2B01:00"))
    assert detail.startswith("active_from__lt: '0001-01-01T00:00:00+01:00' is out of range")


@ROUTES
def test_the_first_and_last_instants_in_utc_are_valid_datetime_filters(
    client: TestClient, runtime: Runtime, acme: dict[str, str], path: str
) -> None:
    grant(runtime)
    query = "created_at__gte=0001-01-01T00:00:00Z&created_at__lte=9999-12-31T23:59:59.999999Z"
    response = answer(client, path, acme, query)
    assert response.status_code == 200, response.text
    assert response.json()["total_count"] == 1


@ROUTES
def test_a_quantity_filter_with_an_exponent_is_400(
    client: TestClient, acme: dict[str, str], path: str
) -> None:
    detail = detail_of(answer(client, path, acme, "quantity__gt=1e999999"))
    assert detail.startswith("quantity__gt: '1e999999' is not a valid decimal: ASCII digits")


@ROUTES
@pytest.mark.parametrize("raw", ["1_000", "%EF%BC%91", "%D9%A3", "1e1", "%2B1", "0x10", "NaN"])
def test_a_quantity_filter_outside_the_decimal_grammar_is_400(
    client: TestClient, acme: dict[str, str], path: str, raw: str
) -> None:
    detail = detail_of(answer(client, path, acme, f"quantity={raw}"))
    assert "is not a valid decimal" in detail


@ROUTES
def test_a_quantity_filter_above_the_largest_stored_quantity_is_400(
    client: TestClient, acme: dict[str, str], path: str
) -> None:
    detail = detail_of(answer(client, path, acme, "quantity=9007199254740992"))
    assert detail.startswith("quantity: '9007199254740992' is out of range")
    assert "at most 9007199254740991" in detail


@ROUTES
def test_the_largest_stored_quantity_is_a_valid_filter(
    client: TestClient, runtime: Runtime, acme: dict[str, str], path: str
) -> None:
    grant(runtime, quantity="10")
    response = answer(
        client, path, acme, f"quantity__lt={MAX_QUANTITY}&quantity__gt=-{MAX_QUANTITY}"
    )
    assert response.status_code == 200, response.text
    assert response.json()["total_count"] == 1


@ROUTES
def test_a_quantity_used_filter_above_the_largest_stored_quantity_is_400(
    client: TestClient, acme: dict[str, str], path: str
) -> None:
    detail = detail_of(answer(client, path, acme, "quantity_used__gte=9007199254740992"))
    assert detail.startswith("quantity_used__gte: '9007199254740992' is out of range")


@ROUTES
def test_a_seventh_fractional_digit_is_400_instead_of_matching_by_rounding(
    client: TestClient, runtime: Runtime, acme: dict[str, str], path: str
) -> None:
    grant(runtime, quantity="0.1")
    detail = detail_of(answer(client, path, acme, "quantity=0.1000004"))
    assert detail == (
        "quantity: '0.1000004' has more than 6 fractional digits:"
        " quantities are exact to 0.000001, so it would only match by rounding"
    )


@ROUTES
def test_trailing_zeros_past_the_sixth_fractional_digit_still_match_exactly(
    client: TestClient, runtime: Runtime, acme: dict[str, str], path: str
) -> None:
    grant(runtime, quantity="0.1")
    response = answer(client, path, acme, "quantity=0.1000000")
    assert response.status_code == 200, response.text
    assert response.json()["total_count"] == 1


@ROUTES
def test_a_quantity_in_list_with_one_value_out_of_range_is_400(
    client: TestClient, acme: dict[str, str], path: str
) -> None:
    detail = detail_of(answer(client, path, acme, "quantity__in=1,9007199254740992"))
    assert detail.startswith("quantity__in: '9007199254740992' is out of range")


def test_an_integer_filter_outside_64_bits_is_400(client: TestClient, acme: dict[str, str]) -> None:
    for value in (INT64_MAX + 1, INT64_MIN - 1):
        detail = detail_of(answer(client, NATIVE, acme, f"number__gt={value}"))
        assert detail == (
            f"number__gt: '{value}' is out of range: integers are 64-bit,"
            " from -9223372036854775808 to 9223372036854775807"
        )


def test_the_64_bit_limits_are_valid_integer_filters(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant(runtime)
    response = answer(client, NATIVE, acme, f"number__lt={INT64_MAX}&number__gt={INT64_MIN}")
    assert response.status_code == 200, response.text
    assert response.json()["total_count"] == 1


#: Every kind of filter value just inside (200) and just outside (400) what it accepts.
EDGES = {
    ZENSKAR: [
        ("id=ffffffff-ffff-ffff-ffff-ffffffffffff", 200),
        ("id__in=00000000-0000-0000-0000-000000000000", 200),
        ("id=ffffffff-ffff-ffff-ffff-fffffffffffff", 400),
        ("customer=" + "c" * 200, 200),
        ("customer=" + "c" * 201, 400),
        ("contract_id__in=" + ",".join(["k"] * 500), 200),
        ("contract_id__in=" + ",".join(["k"] * 501), 400),
        ("contract_id=%7F", 400),
        ("contract_id__isnull=true", 200),
        ("contract_id__isnull=maybe", 400),
        ("created_at__neq=9999-12-31T23:59:59.999999%2B00:00", 200),
        ("created_at__in=2026-01-01,10000-01-01", 400),
        ("quantity__lte=-9007199254740991", 200),
        ("quantity__lte=-9007199254740991.000001", 400),
        ("quantity_used__in=0.000001,9007199254740991", 200),
        ("quantity_used=0.0000001", 400),
        ("quantity=NaN", 400),
        ("quantity=-Infinity", 400),
    ],
    NATIVE: [
        ("number=9223372036854775807", 200),
        ("number=9223372036854775808", 400),
        ("number__in=1,-9223372036854775809", 400),
        ("number=" + "9" * 5000, 400),
        ("parent_id__isnull=false", 200),
        ("plan_id=ffffffff-ffff-ffff-ffff-ffffffffffff", 200),
        ("status=" + "S" * 200, 200),
        ("grace_until__gte=0001-01-01T00:00:00-00:01", 200),
        ("grace_until__lte=0001-01-01T00:00:00%2B00:01", 400),
        ("ends_at__isnull=1", 200),
        ("quantity_used__lt=9007199254740991", 200),
        ("quantity_used__lt=9007199254740991.000000", 200),
        ("quantity_used__lt=9007199254740991.000001", 400),
    ],
}


@pytest.mark.parametrize(
    ("path", "query", "status"),
    [(path, query, status) for path, cases in EDGES.items() for query, status in cases],
    ids=lambda value: str(value)[:40],
)
def test_every_filter_kind_answers_200_inside_its_range_and_400_outside(
    client: TestClient,
    runtime: Runtime,
    acme: dict[str, str],
    path: str,
    query: str,
    status: int,
) -> None:
    grant(runtime)
    response = answer(client, path, acme, query)
    assert response.status_code == status, response.text
