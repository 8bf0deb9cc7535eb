"""``meterd holds``: make, show, settle and release holds (docs/holds.md), as the
reserve route with ``hold_seconds`` and ``/v1/holds/{id}`` do; ``expire`` runs the
tidy-up now (nothing waits for it: a hold past its expiry is expired by time)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.output import JsonFlag, Org, echo_json, parse_uuid, say, table

if TYPE_CHECKING:
    from meterd.services.holds import Hold

app = typer.Typer(help="Holds: units reserved now, settled when the work is done.")

_HoldId = Annotated[str, typer.Argument(help="the hold's id")]


def hold_row(hold: Hold) -> dict[str, Any]:
    """A hold as ``GET /v1/holds/{id}`` answers it."""
    from meterd.api.hold_values import hold_out

    return hold_out(hold).model_dump(mode="json")


def _print(hold: Hold, as_json: bool) -> None:
    row = hold_row(hold)
    if as_json:
        echo_json(row)
        return
    table("hold", list(row), [[v if v is not None else "" for v in row.values()]])


@app.command("create")
def holds_create(
    org: Org,
    customer: Annotated[str, typer.Argument(help="the customer")],
    feature: Annotated[str, typer.Argument(help="the feature key")],
    quantity: Annotated[str, typer.Argument(help="units to hold (exact decimal)")],
    key: Annotated[str, typer.Option(help="the idempotency key (the same key: the same hold)")],
    seconds: Annotated[int, typer.Option(min=1, max=86_400, help="how long to hold")] = 300,
    as_json: JsonFlag = False,
) -> None:
    """Hold units for a customer (granted only if the room left covers them)."""
    from meterd.core.timeutil import utcnow
    from meterd.services.reserve import Reservation

    request = Reservation(org, customer, feature, Decimal(quantity), key)
    result = context.get_runtime().holds.hold(request, seconds, utcnow())
    if result.hold is None:
        say(f"not held: {result.outcome.value}")
        raise typer.Exit(1)
    _print(result.hold, as_json)


@app.command("show")
def holds_show(org: Org, hold: _HoldId, as_json: JsonFlag = False) -> None:
    """A hold and its status now."""
    from meterd.core.timeutil import utcnow

    _print(context.get_runtime().holds.get(org, parse_uuid(hold), utcnow()), as_json)


@app.command("settle")
def holds_settle(
    org: Org,
    hold: _HoldId,
    quantity: Annotated[str, typer.Argument(help="what was used (0 allowed)")],
    as_json: JsonFlag = False,
) -> None:
    """Consume exactly QUANTITY once, at the hold's time; the rest is freed."""
    from meterd.core.timeutil import utcnow

    result = context.get_runtime().holds.settle(org, parse_uuid(hold), Decimal(quantity), utcnow())
    _print(result.hold, as_json)


@app.command("release")
def holds_release(org: Org, hold: _HoldId, as_json: JsonFlag = False) -> None:
    """Give the held units back (again: no change)."""
    from meterd.core.timeutil import utcnow

    _print(context.get_runtime().holds.release(org, parse_uuid(hold), utcnow()), as_json)


@app.command("expire")
def holds_expire() -> None:
    """Free now the expired holds of customers nobody read since (the beat does it)."""
    from meterd.core.timeutil import utcnow

    seen = context.get_runtime().holds.expire_due(utcnow())
    say(f"customers looked at: {seen}")
