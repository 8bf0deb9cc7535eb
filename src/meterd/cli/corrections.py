"""``meterd events``: the counted events (``meterd events CUSTOMER``, as before, is
``meterd events list CUSTOMER``), and their corrections, ``void`` and ``amend``
(as ``POST /v1/events/void|amend``), audited as made by ``cli``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from meterd.cli import context, usage
from meterd.cli.output import JsonFlag, Org, echo_json, iso, quantity, say, table

if TYPE_CHECKING:
    from meterd.services.corrections import Correction


class _EventsGroup(TyperGroup):
    """``meterd events CUSTOMER ...`` lists (the command it was before corrections):
    anything but a subcommand's name or help is read as ``list``'s arguments."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_EventsGroup,
    help="Counted events: list them (the default), void or amend one.",
    no_args_is_help=True,
)
app.command("list")(usage.events)

_Source = Annotated[str, typer.Option("--source", help="the event's source")]
_Id = Annotated[str, typer.Option("--id", help="the event's id")]
_Reason = Annotated[str, typer.Option("--reason", help="why (kept in the event log)")]
_COLUMNS = ("feature", "entitlement_id", "period_start", "quantity")


def void(
    org: Org, source: _Source, event_id: _Id, reason: _Reason, as_json: JsonFlag = False
) -> None:
    """Take back every unit an accepted event counted (flushed or not, in an open or
    a closed period). Refused if the event was never accepted or is void already."""
    from meterd.core.timeutil import utcnow

    made = context.get_runtime().corrections.void(
        org, source, event_id, reason=reason, actor="cli", now=utcnow()
    )
    _show(made, as_json)


def amend(
    org: Org,
    source: _Source,
    event_id: _Id,
    data: Annotated[str, typer.Option("--data", help="the event's new data, as JSON")],
    reason: _Reason,
    as_json: JsonFlag = False,
) -> None:
    """Count an accepted usage event as if it had been sent with this data at its
    original time: its units taken back and the new ones counted, in one step."""
    from meterd.core.errors import InvalidError
    from meterd.core.quantity import JsonNumber
    from meterd.core.timeutil import utcnow

    try:
        new = json.loads(data, parse_float=JsonNumber.from_literal)
    except ValueError as exc:
        raise InvalidError(f"--data is not JSON: {exc}") from None
    if not isinstance(new, dict):
        raise InvalidError("--data must be a JSON object (the event's data)")
    made = context.get_runtime().corrections.amend(
        org, source, event_id, new, reason=reason, actor="cli", now=utcnow()
    )
    _show(made, as_json)


def _show(made: Correction, as_json: bool) -> None:
    parts = [
        {
            "feature": p.feature,
            "entitlement_id": str(p.entitlement_id),
            "period_start": iso(p.period_start),
            "quantity": quantity(p.quantity),
        }
        for p in made.parts
    ]
    if as_json:
        echo_json(
            {
                "kind": made.kind.value,
                "source": made.source,
                "id": made.id,
                "reason": made.reason,
                "actor": made.actor,
                "at": iso(made.at),
                "numbers": list(made.numbers),
                "parts": parts,
                "data": made.data,
            }
        )
        return
    say(f"{made.kind.value} of {made.source} {made.id}: {made.reason} ({made.actor})")
    table("what it moved", _COLUMNS, ([p[c] for c in _COLUMNS] for p in parts))


app.command("void")(void)
app.command("amend")(amend)
