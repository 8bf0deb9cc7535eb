"""``meterd plan list|show|create|update``: templates for entitlements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.ids import resolve_uuid
from meterd.cli.output import (
    JsonFlag,
    Org,
    RolloverMax,
    RolloverMin,
    echo_json,
    iso,
    optional_quantity,
    quantity,
    say,
    table,
)
from meterd.core.domain import BillingType, ContractMode
from meterd.core.terms import TermUnit

if TYPE_CHECKING:
    from meterd.services.values import Plan

app = typer.Typer(help="Plans: templates for entitlements.", no_args_is_help=True)

_COLUMNS = ("id", "key", "quantity", "term", "auto_renew", "is_active")


def plan_row(plan: Plan) -> dict[str, Any]:
    """A plan as the API's PlanOut has it (quantities as it prints them)."""
    return {
        "id": str(plan.id),
        "key": plan.key,
        "display_name": plan.display_name,
        "description": plan.description,
        "feature_id": str(plan.feature_id),
        "quantity": quantity(plan.quantity),
        "billing_type": plan.billing_type,
        "contract_mode": plan.contract_mode,
        "term_value": plan.term_value,
        "term_unit": plan.term_unit,
        "term_kind": plan.term_kind,
        "condition_family": plan.condition_family,
        "grace_days": plan.grace_days,
        "auto_renew": plan.auto_renew,
        "renewal_quantity": quantity(plan.renewal_quantity),
        "rollover_max": quantity(plan.rollover_max),
        "rollover_min": quantity(plan.rollover_min),
        "families": [
            {"id": str(f.id), "key": f.key, "display_name": f.display_name} for f in plan.families
        ],
        "is_active": plan.is_active,
        "row_version": plan.row_version,
        "created_at": iso(plan.created_at),
    }


@app.command("list")
def plan_list(org: Org, as_json: JsonFlag = False) -> None:
    """The org's plans."""
    rows = [plan_row(p) for p in context.get_runtime().catalog.plans_of(org)]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        row["term"] = f"{row['term_value']} {row['term_unit']}" if row["term_unit"] else "-"
        row["quantity"] = row["quantity"] or "unlimited"
    table(f"plans of {org}", _COLUMNS, ([r[c] for c in _COLUMNS] for r in rows))


@app.command("show")
def plan_show(
    org: Org,
    plan: Annotated[str, typer.Argument(help="its id, or a unique prefix")],
    as_json: JsonFlag = False,
) -> None:
    """One plan in full (JSON, as the API shows it; ``--json`` changes nothing)."""
    catalog = context.get_runtime().catalog
    plan_id = resolve_uuid(plan, lambda: [p.id for p in catalog.plans_of(org)], "plan")
    echo_json(plan_row(catalog.plan(org, plan_id)))


@app.command("create")
def plan_create(
    org: Org,
    key: str,
    feature: str,
    quantity: Annotated[str | None, typer.Option(help="a decimal; omit for unlimited")] = None,
    display_name: str = "",
    description: str = "",
    billing_type: BillingType = BillingType.PRE_PAID,
    contract_mode: ContractMode = ContractMode.PRODUCTION,
    term_value: Annotated[int | None, typer.Option(min=1, max=10_000)] = None,
    term_unit: TermUnit | None = None,
    grace_days: Annotated[int, typer.Option(min=0, max=3650)] = 0,
    auto_renew: bool = False,
    renewal_quantity: str | None = None,
    family: Annotated[list[str] | None, typer.Option(help="a plan family key (repeatable)")] = None,
    rollover_max: RolloverMax = None,
    rollover_min: RolloverMin = None,
) -> None:
    """Create a plan: the feature, quantity, term, grace and renewal its entitlements get."""
    from meterd.core.timeutil import utcnow
    from meterd.services.catalog import NewPlan

    plan = context.get_runtime().catalog.create_plan(
        NewPlan(
            org=org,
            key=key,
            feature=feature,
            quantity=optional_quantity(quantity),
            display_name=display_name,
            description=description,
            billing_type=billing_type,
            contract_mode=contract_mode,
            term_value=term_value,
            term_unit=term_unit,
            grace_days=grace_days,
            auto_renew=auto_renew,
            renewal_quantity=optional_quantity(renewal_quantity, "renewal_quantity"),
            families=tuple(family or ()),
            rollover_max=optional_quantity(rollover_max, "rollover_max"),
            rollover_min=optional_quantity(rollover_min, "rollover_min"),
        ),
        utcnow(),
    )
    say(f"plan {plan.key} ({plan.id}) created")


@app.command("update")
def plan_update(
    org: Org,
    plan: Annotated[str, typer.Argument(help="its id, or a unique prefix")],
    display_name: str | None = None,
    description: str | None = None,
    active: Annotated[
        bool | None,
        typer.Option("--active/--retired", help="retire (or revive): no new entitlements from it"),
    ] = None,
    version: Annotated[
        int | None,
        typer.Option("--version", help="refuse unless the plan is at this row_version"),
    ] = None,
) -> None:
    """Rename, describe or retire a plan (PATCH /v1/plans/{id}); its terms are fixed.
    Without ``--version`` the change applies to the plan as just read."""
    catalog = context.get_runtime().catalog
    plan_id = resolve_uuid(plan, lambda: [p.id for p in catalog.plans_of(org)], "plan")
    given = {"display_name": display_name, "description": description, "is_active": active}
    values = {k: v for k, v in given.items() if v is not None}
    version = catalog.plan(org, plan_id).row_version if version is None else version
    changed = catalog.change_plan(org, plan_id, version, values)
    say(f"plan {changed.key} ({changed.id}) updated")
