"""What a customer used: ``usage`` (over time), ``balance`` (now) and ``events``
(the counted events behind the usage, and the bill)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.output import JsonFlag, Org, echo_json, iso, quantity, say, table, when

if TYPE_CHECKING:
    from meterd.services.usage_report import UsageRow

_From = Annotated[str | None, typer.Option("--from", help="RFC 3339; default: 30 days ago")]
_To = Annotated[str | None, typer.Option("--to", help="RFC 3339; default: now")]
_BALANCE_COLUMNS = (
    "entitlement_id",
    "quantity",
    "consumed",
    "held",
    "allotted",
    "pending",
    "remaining",
    "overage",
)
_EVENT_COLUMNS = ("time", "id", "feature", "quantity", "entitlement_id", "part")


def usage(
    org: Org,
    customer: Annotated[str | None, typer.Argument(help="all customers when left out")] = None,
    feature: Annotated[str | None, typer.Option(help="one feature (default: all)")] = None,
    start: _From = None,
    end: _To = None,
    window: Annotated[str, typer.Option(help="HOUR, DAY or MONTH")] = "DAY",
    tz: Annotated[str, typer.Option(help="IANA time zone of the windows")] = "UTC",
    group_by: Annotated[
        str, typer.Option("--group-by", help="comma-separated: customer, feature, entitlement")
    ] = "",
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout, for spreadsheets")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Usage over time from the event log: a bar per window, exact quantities."""
    from datetime import timedelta

    from meterd.cli import usage_chart
    from meterd.core.errors import InvalidError
    from meterd.core.timeutil import utcnow
    from meterd.services.usage_report import Window, parse_group_by, time_zone

    zone = time_zone(tz)
    groups = parse_group_by(group_by)
    try:
        kind = Window(window.upper())
    except ValueError:
        raise InvalidError(f"window: {window!r} is not one of HOUR, DAY, MONTH") from None
    now = utcnow()
    rows = context.get_runtime().usage_report.usage(
        org,
        customer=customer,
        feature=feature,
        start=when(start, now - timedelta(days=30)) or now,
        end=when(end, now) or now,
        window=kind,
        tz=zone,
        group_by=groups,
    )
    if as_json:
        echo_json([usage_window(row) for row in rows])
        return
    if as_csv:
        typer.echo(usage_chart.to_csv(rows), nl=False)
        return
    if not rows:
        say("no usage in that range")
        return
    for line in usage_chart.chart(rows):
        typer.echo(line)  # not through rich: a chart line must never wrap


def usage_window(row: UsageRow) -> dict[str, Any]:
    """A window of usage as GET /v1/usage's ``data`` items have it (fields that do not
    apply, as ``customer_id`` when not grouped by customer, are left out)."""
    item = {
        "window_start": row.window_start.isoformat(),
        "window_end": row.window_end.isoformat(),
        "customer_id": row.customer_id,
        "feature": row.feature,
        "entitlement_id": None if row.entitlement_id is None else str(row.entitlement_id),
        "quantity": quantity(row.quantity),
        "events": row.events,
        "filters": dict(row.filters) if row.filters else None,
    }
    return {k: v for k, v in item.items() if v is not None}


def balance(org: Org, customer: str, feature: str, as_json: JsonFlag = False) -> None:
    """Real-time consumption: flushed + pending, per entitlement (``allotted``: what
    its child entitlements hold, when it allots)."""
    from meterd.core.timeutil import utcnow

    balances = context.get_runtime().balance.balances(org, customer, feature, utcnow())
    rows = [
        {
            "entitlement_id": str(b.entitlement_id),
            "period_start": iso(b.period_start),
            "quantity": quantity(b.quantity),
            "consumed": quantity(b.consumed),
            "flushed": quantity(b.flushed),
            "pending": quantity(b.pending),
            "remaining": quantity(b.remaining),
            "overage": quantity(b.overage),
            "held": quantity(b.held),
            "allotted": quantity(b.allotted),
            "state": b.state.value,
        }
        for b in balances
    ]
    if as_json:
        echo_json(rows)
        return
    shown = ([_cell(r, c) for c in _BALANCE_COLUMNS] for r in rows)
    table(f"{org} / {customer} / {feature}", _BALANCE_COLUMNS, shown)


def _cell(row: dict[str, Any], column: str) -> Any:
    """A balance table's cell: a null quantity is unlimited, a null ``allotted``
    never allotted."""
    if row[column] is not None:
        return row[column]
    return "-" if column == "allotted" else "unlimited"


def events(
    org: Org,
    customer: str,
    feature: Annotated[str | None, typer.Option(help="one feature (default: all)")] = None,
    start: _From = None,
    end: _To = None,
    limit: Annotated[int, typer.Option(min=1, help="events per page")] = 100,
    cursor: Annotated[str | None, typer.Option(help="the next cursor a page printed")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The customer's counted events in a period, oldest first (as GET /v1/events):
    each part of an event split over entitlements on its own row. Explains a bill."""
    from datetime import timedelta

    from meterd.core.timeutil import utcnow

    now = utcnow()
    page = context.get_runtime().usage_report.events(
        org,
        customer,
        feature=feature,
        start=when(start, now - timedelta(days=30)) or now,
        end=when(end, now) or now,
        cursor=cursor,
        limit=limit,
    )
    rows = [
        {
            "source": e.source,
            "id": e.id,
            "time": iso(e.time),
            "customer_id": e.customer_id,
            "feature": e.feature,
            "entitlement_id": str(e.entitlement_id),
            "period_start": iso(e.period_start),
            "quantity": quantity(e.quantity),
            "event_quantity": quantity(e.event_quantity),
            "part": e.part,
            "received_at": iso(e.received_at),
            "data": e.data,
        }
        for e in page.events
    ]
    if as_json:
        echo_json({"data": rows, "next": page.next_cursor})
        return
    table(
        f"counted events of {customer}",
        _EVENT_COLUMNS,
        ([r[c] for c in _EVENT_COLUMNS] for r in rows),
    )
    if page.next_cursor:
        say(f"more: --cursor {page.next_cursor}", soft_wrap=True)
