"""``meterd entitlement periods|transitions``: an entitlement's history, as
``GET /v1/entitlements/{id}/periods`` and ``/transitions`` answer it (the same
service calls, the same fields; quantities and times printed as the API prints them)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.entitlements import entitlement_id
from meterd.cli.output import JsonFlag, Org, echo_json, table

_EntitlementId = Annotated[str, typer.Argument(help="its id, or a unique prefix")]


def period_rows(org: str, text: str) -> list[dict[str, Any]]:
    """Every period of the org's entitlement ``text``, oldest first (``PeriodOut``)."""
    from meterd.core.quantity import format_optional_quantity, format_quantity
    from meterd.core.timeutil import isoformat, isoformat_or_none, utcnow

    rt = context.get_runtime()
    found = entitlement_id(rt, org, text)
    return [
        {
            "period_start": isoformat(p.period.start),
            "period_end": isoformat_or_none(p.period.end),
            "quantity": format_optional_quantity(p.period.quantity),
            "consumed": format_quantity(p.consumed),
            "rolled_over": format_optional_quantity(p.rolled_over),
        }
        for p in rt.queries.periods(org, found, utcnow())
    ]


def transition_rows(org: str, text: str) -> list[dict[str, Any]]:
    """Every status change of the org's entitlement ``text`` (``TransitionOut``)."""
    from meterd.core.timeutil import isoformat

    rt = context.get_runtime()
    found = entitlement_id(rt, org, text)
    return [
        {
            "from_status": t.from_status,
            "to_status": t.to_status,
            "at": isoformat(t.at),
            "recorded_at": isoformat(t.recorded_at),
            "reason": t.reason,
            "job_run_id": t.job_run_id,
        }
        for t in rt.queries.history(org, found)
    ]


def entitlement_periods(org: Org, entitlement: _EntitlementId, as_json: JsonFlag = False) -> None:
    """Every period, oldest first, with its consumption in real time (flushed and not)."""
    rows = period_rows(org, entitlement)
    if as_json:
        echo_json(rows)
        return
    columns = ("period_start", "period_end", "quantity", "consumed")
    shown = (
        (r["period_start"], r["period_end"] or "open", r["quantity"] or "unlimited", r["consumed"])
        for r in rows
    )
    table(f"periods of {entitlement}", columns, shown)


def entitlement_transitions(
    org: Org, entitlement: _EntitlementId, as_json: JsonFlag = False
) -> None:
    """Every status change recorded for it (by the lifecycle jobs and operators)."""
    rows = transition_rows(org, entitlement)
    if as_json:
        echo_json(rows)
        return
    columns = ("at", "from_status", "to_status", "reason", "job_run_id")
    table(f"transitions of {entitlement}", columns, ([r[c] for c in columns] for r in rows))
