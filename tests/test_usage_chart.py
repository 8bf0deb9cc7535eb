"""``meterd usage``'s text output: bars proportional to exact quantities, and CSV."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meterd.cli.usage_chart import bar, chart, to_csv


@dataclass
class Row:
    window_start: str
    window_end: str
    quantity: Decimal
    events: int
    customer_id: str | None = None
    feature: str | None = None
    entitlement_id: str | None = None
    filters: dict[str, Any] | None = None


def test_the_largest_window_fills_the_width_and_others_are_proportional() -> None:
    assert bar(Decimal(10), Decimal(10), 8) == "█" * 8
    assert bar(Decimal(5), Decimal(10), 8) == "█" * 4
    assert bar(Decimal("1.25"), Decimal(10), 8) == "█"


def test_a_remainder_shows_as_an_eighth_block() -> None:
    assert bar(Decimal(1), Decimal(16), 8) == "▌"  # half a cell


def test_no_usage_draws_no_bar() -> None:
    assert bar(Decimal(0), Decimal(10), 8) == ""


def test_each_line_shows_the_exact_quantity_and_events() -> None:
    (line,) = chart([Row("2026-11-22", "2026-11-23", Decimal("0.000001"), 1, feature="api")])
    assert "2026-11-22  api" in line and line.endswith("0.000001  (1 events)")


def test_csv_has_a_header_and_a_row_per_window_with_exact_decimals() -> None:
    text = to_csv([Row("a", "b", Decimal("12.500000"), 3, customer_id="c1")])
    assert text.splitlines() == [
        "window_start,window_end,customer_id,feature,entitlement_id,quantity,events,filters",
        "a,b,c1,,,12.5,3,",  # as the API writes it: no trailing zeros
    ]


def test_an_entitlements_filters_are_in_its_label_and_its_csv_row() -> None:
    row = Row("a", "b", Decimal(7), 2, entitlement_id="e1", filters={"model": "o3", "tier": 2})
    (line,) = chart([row])
    assert 'e1  model="o3" tier=2' in line
    assert to_csv([row]).splitlines()[1] == 'a,b,,,e1,7,2,"{""model"": ""o3"", ""tier"": 2}"'
