"""Issue 20 (7.4): every date meterd writes is RFC 3339 with a four-digit year, also
before year 1000 (glibc's ``strftime("%Y")`` wrote year 1 as ``1``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from meterd.core.timeutil import isoformat, isoformat_seconds

YEARS = [(1, "0001"), (999, "0999"), (1000, "1000")]


def test_payload_times_have_a_four_digit_year() -> None:
    for year, text in YEARS:
        moment = datetime(year, 1, 1, tzinfo=UTC)
        assert isoformat(moment) == f"{text}-01-01T00:00:00.000000Z"
        assert isoformat(moment + timedelta(microseconds=5)) == f"{text}-01-01T00:00:00.000005Z"


def test_seed_page_times_have_a_four_digit_year() -> None:
    for year, text in YEARS:
        moment = datetime(year, 3, 4, 5, 6, 7, 890, tzinfo=UTC)
        assert isoformat_seconds(moment) == f"{text}-03-04T05:06:07Z"


def test_a_time_with_an_offset_is_written_in_utc() -> None:
    moment = datetime(1000, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert isoformat(moment) == "0999-12-31T23:30:00.000000Z"
    assert isoformat_seconds(moment) == "0999-12-31T23:30:00Z"


@pytest.mark.parametrize(("year", "text"), YEARS[:2])
def test_an_entitlement_of_an_early_year_reads_back_in_rfc3339(
    client: TestClient, acme: dict[str, str], year: int, text: str
) -> None:
    body = {
        "customer_id": "cust-1",
        "feature": "api_calls",
        "quantity": "10",
        "starts_at": f"{text}-01-01T00:00:00Z",
        "ends_at": f"{text}-06-01T00:00:00Z",
    }
    made = client.post("/v1/entitlements", json=body, headers=acme)
    assert made.status_code == 201, made.text
    assert made.json()["starts_at"] == f"{text}-01-01T00:00:00.000000Z"
    assert made.json()["ends_at"] == f"{text}-06-01T00:00:00.000000Z"
    periods = client.get(f"/v1/entitlements/{made.json()['id']}/periods", headers=acme).json()
    assert [p["period_start"] for p in periods] == [f"{text}-01-01T00:00:00.000000Z"]
