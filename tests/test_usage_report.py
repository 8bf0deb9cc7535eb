"""Issue 12, part 3: usage over time (``UsageReport.usage``: the quarter-hour rollups
summed into windows of a local calendar) and the events behind it
(``UsageReport.events``: the event log by cursor pages)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from meterd.core.domain import Outcome
from meterd.core.errors import InvalidError
from meterd.core.paging import CursorError
from meterd.runtime import Runtime
from meterd.services import usage_report
from meterd.services.usage_report import (
    MAX_WINDOWS,
    GroupBy,
    UsageRow,
    Window,
    parse_group_by,
    time_zone,
)
from meterd.testing import event

from .conftest import NOW
from .helpers import grant

UTC_ZONE = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")
KOLKATA = ZoneInfo("Asia/Kolkata")
KATHMANDU = ZoneInfo("Asia/Kathmandu")
OCT_1 = datetime(2026, 10, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def use(rt: Runtime, *events: tuple[str, str] | tuple[str, str, dict[str, Any]]) -> None:
    """Count events ``(time, quantity[, event() options, or "data" to add])`` and flush
    them to the log."""
    batch = []
    for n, (time, quantity, *extra) in enumerate(events):
        options = dict(extra[0]) if extra else {}
        more = options.pop("data", {})
        payload = event(**{"quantity": quantity, "event_id": f"e{n}", "time": at(time), **options})
        payload["data"].update(more)
        batch.append(payload)
    assert rt.ingest.ingest(batch, now=NOW).outcomes == [Outcome.ACCEPTED] * len(batch)
    rt.flush.flush_all(NOW)


def usage(
    rt: Runtime,
    start: str,
    end: str,
    window: Window = Window.DAY,
    tz: ZoneInfo = UTC_ZONE,
    **options: Any,
) -> list[UsageRow]:
    return rt.usage_report.usage(
        "acme",
        customer=options.pop("customer", None),
        feature=options.pop("feature", None),
        start=at(start),
        end=at(end),
        window=window,
        tz=tz,
        **options,
    )


def windows(rows: list[UsageRow]) -> list[tuple[str, str, str, int]]:
    return [
        (r.window_start.isoformat(), r.window_end.isoformat(), str(r.quantity), r.events)
        for r in rows
    ]


@pytest.fixture
def unlimited(runtime: Runtime) -> Any:
    """An open-ended, unlimited entitlement of cust-1 from October 1."""
    return grant(runtime, quantity=None, starts_at=OCT_1, ends_at=None)


# -- windows ---------------------------------------------------------------------------------


def test_day_windows_in_utc_sum_each_calendar_day(runtime: Runtime, unlimited: Any) -> None:
    use(
        runtime,
        ("2026-11-20T00:00:00+00:00", "1"),
        ("2026-11-20T23:59:59+00:00", "2"),
        ("2026-11-21T00:00:00+00:00", "4"),
    )
    rows = usage(runtime, "2026-11-20T00:00:00+00:00", "2026-11-22T00:00:00+00:00")
    assert windows(rows) == [
        ("2026-11-20T00:00:00+00:00", "2026-11-21T00:00:00+00:00", "3.000000", 2),
        ("2026-11-21T00:00:00+00:00", "2026-11-22T00:00:00+00:00", "4.000000", 1),
    ]


def test_day_windows_in_india_start_at_local_midnight_1830_utc(
    runtime: Runtime, unlimited: Any
) -> None:
    use(
        runtime,
        ("2026-11-20T18:15:00+00:00", "1"),  # 23:45 on the 20th in India
        ("2026-11-20T18:30:00+00:00", "2"),  # 00:00 on the 21st
    )
    rows = usage(runtime, "2026-11-20T00:00:00+05:30", "2026-11-22T00:00:00+05:30", tz=KOLKATA)
    assert windows(rows) == [
        ("2026-11-20T00:00:00+05:30", "2026-11-21T00:00:00+05:30", "1.000000", 1),
        ("2026-11-21T00:00:00+05:30", "2026-11-22T00:00:00+05:30", "2.000000", 1),
    ]


def test_hour_windows_in_nepal_follow_its_quarter_hour_offset(
    runtime: Runtime, unlimited: Any
) -> None:
    use(
        runtime,
        ("2026-11-21T04:00:00+00:00", "1"),  # 09:45 in Nepal
        ("2026-11-21T04:15:00+00:00", "2"),  # 10:00
    )
    rows = usage(
        runtime, "2026-11-21T09:00:00+05:45", "2026-11-21T11:00:00+05:45", Window.HOUR, KATHMANDU
    )
    assert windows(rows) == [
        ("2026-11-21T09:00:00+05:45", "2026-11-21T10:00:00+05:45", "1.000000", 1),
        ("2026-11-21T10:00:00+05:45", "2026-11-21T11:00:00+05:45", "2.000000", 1),
    ]


def test_the_day_clocks_go_back_in_paris_is_one_25_hour_window(
    runtime: Runtime, unlimited: Any
) -> None:
    use(
        runtime,
        ("2026-10-24T22:00:00+00:00", "1"),  # 00:00 CEST on the 25th
        ("2026-10-25T22:59:00+00:00", "2"),  # 23:59 CET on the 25th
        ("2026-10-25T23:00:00+00:00", "4"),  # 00:00 CET on the 26th
    )
    rows = usage(runtime, "2026-10-25T00:00:00+02:00", "2026-10-27T00:00:00+01:00", tz=PARIS)
    assert windows(rows) == [
        ("2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00", "3.000000", 2),
        ("2026-10-26T00:00:00+01:00", "2026-10-27T00:00:00+01:00", "4.000000", 1),
    ]
    # (in UTC: Python subtracts two datetimes of one zone on the wall clock)
    assert rows[0].window_end.astimezone(UTC) - rows[0].window_start == timedelta(hours=25)


def test_the_hour_repeated_when_clocks_go_back_is_two_windows(
    runtime: Runtime, unlimited: Any
) -> None:
    use(
        runtime,
        ("2026-10-25T00:30:00+00:00", "1"),  # 02:30 CEST
        ("2026-10-25T01:30:00+00:00", "2"),  # 02:30 CET
    )
    rows = usage(
        runtime, "2026-10-25T02:00:00+02:00", "2026-10-25T03:00:00+01:00", Window.HOUR, PARIS
    )
    assert windows(rows) == [
        ("2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "1.000000", 1),
        ("2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00", "2.000000", 1),
    ]


def test_month_windows_follow_the_local_calendar(runtime: Runtime, unlimited: Any) -> None:
    use(
        runtime,
        ("2026-10-20T12:00:00+00:00", "1"),
        ("2026-10-31T23:30:00+00:00", "2"),  # October in UTC, November 1 00:30 in Paris
        ("2026-11-21T12:00:00+00:00", "4"),
    )
    start, end = "2026-10-01T00:00:00+02:00", "2026-12-01T00:00:00+01:00"
    assert windows(usage(runtime, start, end, Window.MONTH, PARIS)) == [
        ("2026-10-01T00:00:00+02:00", "2026-11-01T00:00:00+01:00", "1.000000", 1),
        ("2026-11-01T00:00:00+01:00", "2026-12-01T00:00:00+01:00", "6.000000", 2),
    ]
    assert [r.quantity for r in usage(runtime, start, end, Window.MONTH)] == [
        Decimal(3),
        Decimal(4),
    ]


def test_windows_without_usage_are_left_out(runtime: Runtime, unlimited: Any) -> None:
    use(runtime, ("2026-11-01T10:00:00+00:00", "1"), ("2026-11-20T10:00:00+00:00", "1"))
    rows = usage(runtime, "2026-10-20T00:00:00+00:00", "2026-11-22T00:00:00+00:00")
    assert [r.window_start.date().isoformat() for r in rows] == ["2026-11-01", "2026-11-20"]


def test_the_first_and_last_windows_are_clipped_to_the_range(
    runtime: Runtime, unlimited: Any
) -> None:
    use(runtime, ("2026-11-20T05:00:00+00:00", "1"), ("2026-11-21T05:00:00+00:00", "2"))
    rows = usage(runtime, "2026-11-20T04:00:00+00:00", "2026-11-21T06:00:00+00:00")
    assert windows(rows) == [
        ("2026-11-20T04:00:00+00:00", "2026-11-21T00:00:00+00:00", "1.000000", 1),
        ("2026-11-21T00:00:00+00:00", "2026-11-21T06:00:00+00:00", "2.000000", 1),
    ]


def test_a_bound_inside_a_quarter_hour_takes_that_whole_quarter(
    runtime: Runtime, unlimited: Any
) -> None:
    use(
        runtime,
        ("2026-11-20T10:14:59+00:00", "1"),  # before the quarter hour of from: out
        ("2026-11-20T10:15:00+00:00", "2"),  # in the quarter of from, before from: in
        ("2026-11-20T10:44:00+00:00", "4"),  # in the quarter of to, after to: in
        ("2026-11-20T10:45:00+00:00", "8"),  # after the quarter of to: out
    )
    rows = usage(runtime, "2026-11-20T10:20:00+00:00", "2026-11-20T10:31:00+00:00")
    assert windows(rows) == [
        ("2026-11-20T10:15:00+00:00", "2026-11-20T10:45:00+00:00", "6.000000", 2)
    ]


def test_quantities_are_summed_exactly_to_the_micro_unit(runtime: Runtime, unlimited: Any) -> None:
    """Up to the exact bound of a scale-6 counter (9007199254.740991), to the last digit."""
    use(runtime, *[(f"2026-11-20T10:0{n}:00+00:00", "0.000001") for n in range(7)])
    use(runtime, ("2026-11-20T11:00:00+00:00", "9007199254.740984", {"event_id": "big"}))
    [row] = usage(runtime, "2026-11-20T00:00:00+00:00", "2026-11-21T00:00:00+00:00")
    assert row.quantity == Decimal("9007199254.740991")
    assert row.events == 8


def test_usage_is_limited_to_the_customer_and_feature_asked(
    runtime: Runtime, unlimited: Any
) -> None:
    runtime.catalog.create_feature("acme", "storage", now=NOW)
    grant(runtime, "cust-2", quantity=None, starts_at=OCT_1, ends_at=None)
    grant(runtime, quantity=None, starts_at=OCT_1, ends_at=None, feature="storage")
    use(
        runtime,
        ("2026-11-20T10:00:00+00:00", "1"),
        ("2026-11-20T10:00:00+00:00", "2", {"customer": "cust-2"}),
        ("2026-11-20T10:00:00+00:00", "4", {"feature": "storage"}),
    )
    span = ("2026-11-20T00:00:00+00:00", "2026-11-21T00:00:00+00:00")

    def total(**options: Any) -> Decimal:
        return sum((r.quantity for r in usage(runtime, *span, **options)), Decimal(0))

    assert total() == 7
    assert total(customer="cust-1") == 5
    assert total(feature="api_calls") == 3
    assert total(customer="cust-1", feature="api_calls") == 1


# -- groups ----------------------------------------------------------------------------------


@pytest.fixture
def two_customers_two_features(runtime: Runtime, unlimited: Any) -> None:
    runtime.catalog.create_feature("acme", "storage", now=NOW)
    grant(runtime, "cust-2", quantity=None, starts_at=OCT_1, ends_at=None)
    grant(runtime, quantity=None, starts_at=OCT_1, ends_at=None, feature="storage")
    use(
        runtime,
        ("2026-11-20T10:00:00+00:00", "1"),
        ("2026-11-20T11:00:00+00:00", "2", {"customer": "cust-2"}),
        ("2026-11-20T12:00:00+00:00", "4", {"feature": "storage"}),
        ("2026-11-21T12:00:00+00:00", "8", {"feature": "storage"}),
    )


def grouped(rt: Runtime, *keys: GroupBy) -> list[tuple[Any, ...]]:
    rows = usage(rt, "2026-11-20T00:00:00+00:00", "2026-11-22T00:00:00+00:00", group_by=keys)
    return [
        (r.window_start.day, r.customer_id, r.feature, r.entitlement_id, str(r.quantity))
        for r in rows
    ]


@pytest.mark.usefixtures("two_customers_two_features")
def test_group_by_customer_splits_each_window_by_customer(runtime: Runtime) -> None:
    assert grouped(runtime, GroupBy.CUSTOMER) == [
        (20, "cust-1", None, None, "5.000000"),
        (20, "cust-2", None, None, "2.000000"),
        (21, "cust-1", None, None, "8.000000"),
    ]


@pytest.mark.usefixtures("two_customers_two_features")
def test_group_by_feature_splits_each_window_by_feature(runtime: Runtime) -> None:
    assert grouped(runtime, GroupBy.FEATURE) == [
        (20, None, "api_calls", None, "3.000000"),
        (20, None, "storage", None, "4.000000"),
        (21, None, "storage", None, "8.000000"),
    ]


def test_group_by_entitlement_names_its_customer_and_feature(
    runtime: Runtime, unlimited: Any
) -> None:
    first = grant(runtime, quantity="3", starts_at=OCT_1, ends_at=None, priority=-1)
    use(runtime, ("2026-11-20T10:00:00+00:00", "5"))  # 3 on the first, 2 on the unlimited one
    assert sorted(grouped(runtime, GroupBy.ENTITLEMENT), key=lambda r: r[-1]) == [
        (20, "cust-1", "api_calls", unlimited.id, "2.000000"),
        (20, "cust-1", "api_calls", first.id, "3.000000"),
    ]


def test_group_by_entitlement_shows_the_dimension_filters_of_each_grant(
    runtime: Runtime,
) -> None:
    """Per-model grants: usage by entitlement reads as usage per model."""
    gpt = grant(runtime, quantity=None, starts_at=OCT_1, ends_at=None, filters={"model": "gpt"})
    o3 = grant(runtime, quantity=None, starts_at=OCT_1, ends_at=None, filters={"model": "o3"})
    use(
        runtime,
        ("2026-11-20T10:00:00+00:00", "5", {"data": {"model": "gpt"}}),
        ("2026-11-20T11:00:00+00:00", "2", {"data": {"model": "o3"}}),
    )
    rows = usage(
        runtime,
        "2026-11-20T00:00:00+00:00",
        "2026-11-21T00:00:00+00:00",
        group_by=[GroupBy.ENTITLEMENT],
    )
    shown = {(r.entitlement_id, str(r.quantity)): r.filters for r in rows}
    assert shown == {(gpt.id, "5.000000"): {"model": "gpt"}, (o3.id, "2.000000"): {"model": "o3"}}


def test_rows_not_grouped_by_entitlement_carry_no_filters(runtime: Runtime) -> None:
    grant(runtime, quantity=None, starts_at=OCT_1, ends_at=None, filters={"model": "gpt"})
    use(runtime, ("2026-11-20T10:00:00+00:00", "5", {"data": {"model": "gpt"}}))
    rows = usage(
        runtime,
        "2026-11-20T00:00:00+00:00",
        "2026-11-21T00:00:00+00:00",
        group_by=[GroupBy.CUSTOMER],
    )
    assert [r.filters for r in rows] == [None]


@pytest.mark.usefixtures("two_customers_two_features")
def test_group_by_customer_and_feature_sorts_rows_by_window_then_keys(runtime: Runtime) -> None:
    assert grouped(runtime, GroupBy.FEATURE, GroupBy.CUSTOMER) == [
        (20, "cust-1", "api_calls", None, "1.000000"),
        (20, "cust-1", "storage", None, "4.000000"),
        (20, "cust-2", "api_calls", None, "2.000000"),
        (21, "cust-1", "storage", None, "8.000000"),
    ]


def test_group_by_text_is_parsed_and_an_unknown_key_refused() -> None:
    assert parse_group_by(" feature,customer,,feature ") == [GroupBy.FEATURE, GroupBy.CUSTOMER]
    assert parse_group_by(None) == []
    with pytest.raises(InvalidError, match="group_by: 'plan' is not one of"):
        parse_group_by("customer,plan")


# -- bounds ----------------------------------------------------------------------------------


def test_a_range_of_more_than_10000_windows_is_refused(runtime: Runtime) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(hours=MAX_WINDOWS)
    rows = runtime.usage_report.usage(
        "acme", customer=None, feature=None, start=start, end=end, window=Window.HOUR, tz=UTC_ZONE
    )
    assert rows == []
    with pytest.raises(InvalidError, match="more than 10000 HOUR windows"):
        runtime.usage_report.usage(
            "acme", customer=None, feature=None, start=start, end=end + timedelta(minutes=1),
            window=Window.HOUR, tz=UTC_ZONE,
        )  # fmt: skip


def test_an_answer_of_more_than_max_rows_rows_is_refused(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant(runtime, quantity=None, starts_at=OCT_1, ends_at=None)
    use(runtime, *[(f"2026-11-20T0{h}:10:00+00:00", "1") for h in range(4)])
    monkeypatch.setattr(usage_report, "MAX_ROWS", 4)
    assert len(usage(runtime, "2026-11-20T00:00Z", "2026-11-21T00:00Z", Window.HOUR)) == 4
    monkeypatch.setattr(usage_report, "MAX_ROWS", 3)
    with pytest.raises(InvalidError, match="more than 3 rows: narrow the range"):
        usage(runtime, "2026-11-20T00:00Z", "2026-11-21T00:00Z", Window.HOUR)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-11-20T00:00:00+00:00", "2026-11-20T00:00:00+00:00", "from must be before to"),
        ("2026-11-21T00:00:00+00:00", "2026-11-20T00:00:00+00:00", "from must be before to"),
        ("2026-11-20T00:00:00", "2026-11-21T00:00:00+00:00", "from must carry a time zone"),
        ("0001-01-01T00:00:00+00:00", "2026-11-21T00:00:00+00:00", "from is out of range"),
        ("2026-11-20T00:00:00+00:00", "9999-12-31T00:00:00+00:00", "to is out of range"),
    ],
)
def test_bounds_out_of_order_naive_or_out_of_range_are_refused(
    runtime: Runtime, start: str, end: str, message: str
) -> None:
    with pytest.raises(InvalidError, match=message):
        usage(runtime, start, end)


def test_time_zones_are_iana_names_and_others_are_refused() -> None:
    assert time_zone("Europe/Paris").key == "Europe/Paris"
    for bad in ("Mars/Olympus", "../etc/passwd", "Europe", "", "UTC\x00", "x" * 65):
        with pytest.raises(InvalidError, match="unknown time zone"):
            time_zone(bad)


# -- events ----------------------------------------------------------------------------------


def events_page(rt: Runtime, cursor: str | None, limit: int, **options: Any) -> Any:
    return rt.usage_report.events(
        "acme",
        options.pop("customer", "cust-1"),
        feature=options.pop("feature", None),
        start=at("2026-11-01T00:00:00+00:00"),
        end=at("2026-11-22T00:00:00+00:00"),
        cursor=cursor,
        limit=limit,
    )


def all_pages(rt: Runtime, limit: int) -> tuple[list[Any], int]:
    seen: list[Any] = []
    cursor, pages = None, 0
    while True:
        page = events_page(rt, cursor, limit)
        pages += 1
        seen.extend(page.events)
        cursor = page.next_cursor
        if cursor is None:
            return seen, pages


def test_event_pages_hold_every_part_once_in_time_source_id_order(
    runtime: Runtime, unlimited: Any
) -> None:
    grant(runtime, quantity="3", starts_at=OCT_1, ends_at=None, priority=-1)
    use(
        runtime,
        ("2026-11-20T10:03:00+00:00", "5"),  # split in two parts (3, then 2)
        *[(f"2026-11-20T10:{n:02d}:00+00:00", "1") for n in range(9)],  # one at 10:03 too
        ("2026-11-21T10:00:00+00:00", "1"),
    )
    seen, pages = all_pages(runtime, limit=4)  # a page ends between the parts of e0
    keys = [(e.time, e.source, e.id, e.part) for e in seen]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys) == 12
    assert pages == 3  # 12 parts by 4: no empty last page
    assert sum((e.quantity for e in seen), Decimal(0)) == 15


def test_a_split_event_is_one_row_per_part_with_the_whole_quantity(
    runtime: Runtime, unlimited: Any
) -> None:
    first = grant(runtime, quantity="3", starts_at=OCT_1, ends_at=None, priority=-1)
    use(runtime, ("2026-11-20T10:00:00+00:00", "5"))
    page = events_page(runtime, None, 1)
    assert [(e.part, e.entitlement_id, e.quantity, e.event_quantity) for e in page.events] == [
        (0, first.id, Decimal(3), Decimal(5))
    ]
    assert page.events[0].data is not None
    rest = events_page(runtime, page.next_cursor, 1)
    assert [(e.part, e.entitlement_id, e.quantity, e.event_quantity) for e in rest.events] == [
        (1, unlimited.id, Decimal(2), Decimal(5))
    ]
    assert rest.events[0].data is None
    assert rest.next_cursor is None


def test_events_are_the_customers_and_the_features_asked(runtime: Runtime, unlimited: Any) -> None:
    grant(runtime, "cust-2", quantity=None, starts_at=OCT_1, ends_at=None)
    use(
        runtime,
        ("2026-11-20T10:00:00+00:00", "1"),
        ("2026-11-20T10:00:00+00:00", "2", {"customer": "cust-2"}),
    )
    assert [e.customer_id for e in events_page(runtime, None, 10).events] == ["cust-1"]
    assert events_page(runtime, None, 10, feature="storage").events == []


def forged(doc: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


GOOD = {"k": "events", "t": "2026-11-20T10:00:00+00:00", "s": "tests", "i": "e1", "p": 0}


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "e30",  # {}
        forged([1, 2]),
        forged({**GOOD, "k": "created_at:asc"}),
        forged({**GOOD, "t": "2026-11-20T10:00:00"}),
        forged({**GOOD, "t": "0001-01-01T00:00:00+01:00"}),
        forged({**GOOD, "s": ""}),
        forged({**GOOD, "i": "a\x00b"}),
        forged({**GOOD, "i": "x" * 601}),  # a logged id holds up to 600
        forged({**GOOD, "p": -1}),
        forged({**GOOD, "p": True}),
        forged({**GOOD, "p": 2**63}),
        forged({**GOOD, "extra": 1}),
    ],
)
def test_a_garbled_or_forged_cursor_is_refused(runtime: Runtime, cursor: str) -> None:
    with pytest.raises(CursorError, match="the cursor is not valid"):
        events_page(runtime, cursor, 10)


def test_a_well_formed_cursor_is_taken(runtime: Runtime) -> None:
    assert events_page(runtime, forged(GOOD), 10).events == []


@pytest.mark.parametrize("limit", [0, 1001])
def test_a_page_limit_out_of_1_to_1000_is_refused(runtime: Runtime, limit: int) -> None:
    with pytest.raises(InvalidError, match="limit must be 1 to 1000"):
        events_page(runtime, None, limit)
