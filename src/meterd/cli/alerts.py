"""``meterd alerts``: alert rules, the thresholds ingest judges each period on
(``POST|GET|DELETE /v1/alert-rules``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.ids import match_prefix
from meterd.cli.output import JsonFlag, Org, echo_json, say, table

if TYPE_CHECKING:
    from meterd.runtime import Runtime
    from meterd.services.alert_rules import AlertRuleService, StoredRule

app = typer.Typer(
    help="Alert rules: thresholds notified once per entitlement period (an org without"
    " rules has 80 % and 100 %).",
    no_args_is_help=True,
)

_RuleId = Annotated[str, typer.Argument(help="the rule's id (ar_...), or a unique prefix")]
_KIND_HELP = (
    "PERCENT of the period's quantity (any value, 150 included), REMAINING (remaining at"
    " or below the threshold) or CONSUMED (consumed at or above it)"
)


def _service(rt: Runtime) -> AlertRuleService:
    return rt.alert_rules


def rule_row(rule: StoredRule) -> dict[str, Any]:
    """A rule as ``GET /v1/alert-rules`` shows it."""
    from meterd.core.quantity import format_quantity
    from meterd.core.timeutil import isoformat

    return {
        "id": rule.id,
        "scope": rule.scope,
        "feature": rule.feature,
        "customer_id": rule.customer_id,
        "entitlement_id": str(rule.entitlement_id) if rule.entitlement_id else None,
        "kind": rule.kind.value,
        "threshold": format_quantity(rule.threshold),
        "created_at": isoformat(rule.created_at),
    }


def _rule_id(rt: Runtime, org: str, text: str) -> str:
    return match_prefix(text, (r.id for r in _service(rt).rules(org)), "alert rule")


@app.command("add")
def alerts_add(
    org: Org,
    kind: Annotated[str, typer.Argument(help=_KIND_HELP)],
    threshold: Annotated[str, typer.Argument(help="a percent, or a quantity of the feature")],
    feature: Annotated[str | None, typer.Option(help="scope: one feature")] = None,
    customer: Annotated[str | None, typer.Option(help="scope: one customer")] = None,
    entitlement: Annotated[str | None, typer.Option(help="scope: one entitlement (uuid)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Add a rule (scope: the whole org unless one of --feature, --customer,
    --entitlement); ingest judges it from the next batch on."""
    import uuid

    from meterd.core.notifications import AlertKind
    from meterd.core.timeutil import utcnow
    from meterd.services.alert_rules import AlertRuleSpec

    try:
        rule_kind = AlertKind(kind.upper())
    except ValueError:
        raise typer.BadParameter(f"kind: one of {', '.join(k.value for k in AlertKind)}") from None
    try:
        ent_id = uuid.UUID(entitlement) if entitlement is not None else None
    except ValueError:
        raise typer.BadParameter("--entitlement: a uuid") from None
    spec = AlertRuleSpec(
        org=org,
        kind=rule_kind,
        threshold=threshold,
        feature=feature,
        customer_id=customer,
        entitlement_id=ent_id,
    )
    rule = _service(context.get_runtime()).create(spec, utcnow())
    if as_json:
        echo_json(rule_row(rule))
        return
    say(f"alert rule {rule.id}: {rule.kind.value} {threshold} ({rule.scope})")


@app.command("list")
def alerts_list(org: Org, as_json: JsonFlag = False) -> None:
    """The org's rules, oldest first."""
    rows = [rule_row(r) for r in _service(context.get_runtime()).rules(org)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        say(f"{org} has no alert rules: 80 % and 100 % of each PRE_PAID period apply")
        return
    columns = ("id", "kind", "threshold", "scope", "of")
    table(
        f"Alert rules of {org}",
        columns,
        (
            (
                r["id"],
                r["kind"],
                r["threshold"],
                r["scope"],
                r["feature"] or r["customer_id"] or r["entitlement_id"] or "",
            )
            for r in rows
        ),
    )


@app.command("show")
def alerts_show(org: Org, rule_id: _RuleId) -> None:
    """One rule, as JSON."""
    rt = context.get_runtime()
    echo_json(rule_row(_service(rt).get(org, _rule_id(rt, org, rule_id))))


@app.command("remove")
def alerts_remove(org: Org, rule_id: _RuleId) -> None:
    """Delete a rule: ingest stops judging it at once."""
    from meterd.core.timeutil import utcnow

    rt = context.get_runtime()
    rule = _service(rt).delete(org, _rule_id(rt, org, rule_id), utcnow())
    say(f"alert rule {rule.id} removed")
