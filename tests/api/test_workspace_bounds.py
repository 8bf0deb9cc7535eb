"""Issue 11: the workspace seed page answers an out-of-range parameter with 400 in its
own ``Data``/``Errors``/``Warnings``/``Success`` envelope, never a plain-text 500.

The page types every integer as an int32; its dates must stay within years 1 to
9999 once converted to UTC.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.runtime import Runtime

from ..helpers import grant

WORKSPACE = "/api/workspace/entitlement-operations/entitlements"
INTEGERS = ("ConditionFamily", "TermKind", "TermValue", "TermUnit", "Status", "Page", "PageSize")
DATES = ("StartsFromUtc", "StartsToUtc", "EndsFromUtc", "EndsToUtc")


def error_of(response: Any, field: str) -> str:
    """The one error of a 400 envelope, which must name ``field``."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["Data"], body["Warnings"], body["Success"]) == (None, [], False)
    (error,) = body["Errors"]
    assert (error["Code"], error["Field"], error["Target"]) == ("InvalidParameter", field, "query")
    message: str = error["Message"]
    return message


def test_an_end_bound_after_year_9999_in_utc_is_400_in_the_envelope(
    client: TestClient, acme: dict[str, str]
) -> None:
    response = client.get(f"{WORKSPACE}?EndsToUtc=9999-12-31T23:59:59-01:00", headers=acme)
    assert error_of(response, "EndsToUtc") == (
        "EndsToUtc is out of range: in UTC it must fall between"
        " 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z"
    )


def test_a_start_bound_before_year_1_in_utc_is_400_in_the_envelope(
    client: TestClient, acme: dict[str, str]
) -> None:
    response = client.get(f"{WORKSPACE}?StartsFromUtc=0001-01-01T00:00:00%2B01:00", headers=acme)
    assert error_of(response, "StartsFromUtc").startswith("StartsFromUtc is out of range")


def test_a_page_past_int32_is_400_in_the_envelope(client: TestClient, acme: dict[str, str]) -> None:
    response = client.get(WORKSPACE, params={"Page": "9223372036854775807"}, headers=acme)
    assert error_of(response, "Page") == ("Page must be a 32-bit integer (-2147483648..2147483647)")


def test_the_last_int32_page_is_an_empty_page(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    grant(runtime)
    params = {"Page": "2147483647", "PageSize": "200"}
    response = client.get(WORKSPACE, params=params, headers=acme)
    assert response.status_code == 200, response.text
    data = response.json()["Data"]
    assert (data["Items"], data["TotalCount"], data["Page"]) == ([], 1, 2147483647)


def test_a_term_value_past_int32_is_400_in_the_envelope(
    client: TestClient, acme: dict[str, str]
) -> None:
    response = client.get(WORKSPACE, params={"TermValue": "99999999999999999999"}, headers=acme)
    assert error_of(response, "TermValue") == (
        "TermValue must be a 32-bit integer (-2147483648..2147483647)"
    )


def test_the_largest_int32_term_value_is_a_valid_filter(
    client: TestClient, acme: dict[str, str]
) -> None:
    response = client.get(WORKSPACE, params={"TermValue": "2147483647"}, headers=acme)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("name", INTEGERS)
@pytest.mark.parametrize("value", [str(2**31), str(-(2**31) - 1), "9" * 200])
def test_every_integer_parameter_past_int32_is_400_in_the_envelope(
    client: TestClient, acme: dict[str, str], name: str, value: str
) -> None:
    # Names are case-insensitive; the error names the parameter canonically.
    response = client.get(WORKSPACE, params={name.lower(): value}, headers=acme)
    assert error_of(response, name).startswith(f"{name} must be")


@pytest.mark.parametrize("name", DATES)
@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-00:01", "0001-01-01T00:00:00+00:01"])
def test_every_date_parameter_outside_years_1_to_9999_in_utc_is_400_in_the_envelope(
    client: TestClient, acme: dict[str, str], name: str, value: str
) -> None:
    response = client.get(WORKSPACE, params={name.upper(): value}, headers=acme)
    assert error_of(response, name).startswith(f"{name} is out of range")


@pytest.mark.parametrize("name", DATES)
def test_every_date_parameter_accepts_the_first_and_last_instants(
    client: TestClient, acme: dict[str, str], name: str
) -> None:
    for value in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"):
        response = client.get(WORKSPACE, params={name: value}, headers=acme)
        assert response.status_code == 200, response.text
