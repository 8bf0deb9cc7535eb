"""``meterd entitlement create``: by feature and terms, or from a plan (as the API)."""

from __future__ import annotations

from typing import Annotated

import typer

from meterd.cli import context
from meterd.cli.ids import resolve_uuid
from meterd.cli.output import (
    Org,
    RolloverMax,
    RolloverMin,
    dimensions,
    optional_quantity,
    say,
    when,
)
from meterd.core.domain import BillingType, ContractMode
from meterd.core.terms import TermUnit

_Quantity = Annotated[str | None, typer.Option(help="a decimal like 10 or 0.5; omit for unlimited")]
_Filter = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        help="dimension: only usage whose data has this value counts on it:"
        " key=value (repeatable); fixed at creation",
    ),
]


def entitlement_create(
    org: Org,
    customer: str,
    feature: Annotated[str | None, typer.Argument(help="omit with --plan")] = None,
    quantity: _Quantity = None,
    starts: Annotated[str | None, typer.Option(help="ISO 8601; default now")] = None,
    ends: Annotated[str | None, typer.Option(help="ISO 8601; default open-ended")] = None,
    billing_type: Annotated[BillingType | None, typer.Option(help="default: PRE_PAID")] = None,
    contract_mode: Annotated[ContractMode | None, typer.Option(help="default: PRODUCTION")] = None,
    priority: Annotated[int, typer.Option(help="burn-down order, lowest first (±1,000,000)")] = 0,
    grace_days: Annotated[int | None, typer.Option(help="default: 0")] = None,
    term_value: Annotated[
        int | None, typer.Option(min=1, max=10_000, help="with --term-unit: the term")
    ] = None,
    term_unit: Annotated[TermUnit | None, typer.Option(help="default: starts to ends")] = None,
    auto_renew: Annotated[
        bool | None, typer.Option("--auto-renew/--no-auto-renew", help="renew at each term's end")
    ] = None,
    renewal_quantity: Annotated[str | None, typer.Option(help="each renewed term's")] = None,
    contract_id: str | None = None,
    plan: Annotated[
        str | None,
        typer.Option(help="a plan's id or unique prefix: it gives feature, quantity, terms"),
    ] = None,
    filter: _Filter = None,
    rollover_max: RolloverMax = None,
    rollover_min: RolloverMin = None,
) -> None:
    """Grant a customer a feature: with a quantity and terms, or from ``--plan``."""
    from datetime import timedelta

    from meterd.core.errors import InvalidError
    from meterd.core.terms import Term
    from meterd.core.timeutil import utcnow
    from meterd.services.catalog import NewEntitlement

    rt, now = context.get_runtime(), utcnow()
    starts_at = when(starts, now) or now
    if plan is not None:
        given = {
            "FEATURE": feature, "--quantity": quantity, "--ends": ends,
            "--term-value": term_value, "--term-unit": term_unit, "--auto-renew": auto_renew,
            "--renewal-quantity": renewal_quantity, "--billing-type": billing_type,
            "--contract-mode": contract_mode, "--grace-days": grace_days,
            "--rollover-max": rollover_max, "--rollover-min": rollover_min,
        }  # fmt: skip
        plan_id = resolve_uuid(plan, lambda: [p.id for p in rt.catalog.plans_of(org)], "plan")
        ent = rt.catalog.entitlement_from_plan(
            org, plan_id, customer, starts_at, now, contract_id=contract_id, priority=priority,
            filters=dimensions(filter, "--filter"),
            given=[name for name, value in given.items() if value is not None],
        )  # fmt: skip
        say(f"entitlement #{ent.number} {ent.id} created ({ent.status})")
        return
    if feature is None:
        raise InvalidError("give a feature, or --plan")
    if (term_value is None) != (term_unit is None):
        raise InvalidError("give --term-value and --term-unit together (or neither)")
    term = Term.of(term_value, term_unit) if term_value and term_unit else None
    ent = rt.catalog.create_entitlement(
        NewEntitlement(
            org=org,
            customer_id=customer,
            feature=feature,
            quantity=optional_quantity(quantity),
            starts_at=starts_at,
            ends_at=when(ends, None),
            billing_type=billing_type or BillingType.PRE_PAID,
            contract_mode=contract_mode or ContractMode.PRODUCTION,
            priority=priority,
            grace=timedelta(days=grace_days) if grace_days else None,
            auto_renew=bool(auto_renew),
            term=term,
            renewal_quantity=optional_quantity(renewal_quantity),
            contract_id=contract_id,
            filters=dimensions(filter, "--filter"),
            rollover_max=optional_quantity(rollover_max, "rollover_max"),
            rollover_min=optional_quantity(rollover_min, "rollover_min"),
        ),
        now,
    )
    say(f"entitlement #{ent.number} {ent.id} created ({ent.status})")
