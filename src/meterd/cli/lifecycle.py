"""``meterd lifecycle run``: record what the clock made due, as beat would."""

from __future__ import annotations

from typing import Annotated

import typer

from meterd.cli import context
from meterd.cli.output import JsonFlag, echo_json, say, table

app = typer.Typer(help="The lifecycle job: record what the clock made due.", no_args_is_help=True)

_COLUMNS = ("entitlement_id", "customer", "feature", "from", "to", "at", "reason")


@app.command("run")
def lifecycle_run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show what is due; apply and record nothing")
    ] = False,
    show: Annotated[int, typer.Option(help="transitions listed at most")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Run the lifecycle job now: record every transition that fell due (activation,
    grace, expiry, renewals, months), with its audit row, as beat would."""
    from meterd.core.timeutil import utcnow

    report = context.get_runtime().lifecycle.advance_all(utcnow(), dry_run=dry_run)
    steps = [
        {
            "entitlement_id": str(due.id),
            "customer": due.customer_id,
            "feature": due.feature,
            "from": step.from_status.value,
            "to": step.to_status.value,
            "at": step.at.isoformat(),
            "reason": step.reason,
        }
        for due, chain in report.applied
        for step in chain
    ]
    if as_json:
        echo_json({"dry_run": dry_run, "transitions": report.transitions, "steps": steps[:show]})
        return
    table("would apply" if dry_run else "applied", _COLUMNS, (s.values() for s in steps[:show]))
    verb = "would record" if dry_run else "recorded"
    say(
        f"{verb} {report.transitions} transition(s) of {report.entitlements} entitlement(s)"
        + (f"; {len(steps) - show} not listed" if len(steps) > show else "")
    )
