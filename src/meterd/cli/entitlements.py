"""``meterd entitlement list|show|create|update``; ids whole or as unique prefixes."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.ids import resolve_uuid
from meterd.cli.output import JsonFlag, Org, echo_json, iso, quantity, say, table

if TYPE_CHECKING:
    from meterd.core.domain import Balance
    from meterd.runtime import Runtime
    from meterd.services.values import Entitlement

app = typer.Typer(help="Entitlements.", no_args_is_help=True)

_COLUMNS = ("id", "customer_id", "feature", "status", "quantity", "consumed")


def entitlement_id(rt: Runtime, org: str, text: str) -> uuid.UUID:
    """The org's entitlement ``text`` names (whole, or a unique prefix of its id)."""
    return resolve_uuid(text, lambda: rt.queries.ids_of(org), "entitlement")


def entitlement_row(ent: Entitlement, feature: str, balance: Balance) -> dict[str, Any]:
    """An entitlement as the API's EntitlementOut has it (quantities as it prints them)."""
    return {
        "id": str(ent.id),
        "number": ent.number,
        "customer_id": ent.customer_id,
        "feature": feature,
        "plan_id": None if ent.plan_id is None else str(ent.plan_id),
        "contract_id": ent.contract_id,
        "quantity": quantity(balance.quantity),
        "consumed": quantity(balance.consumed),
        "remaining": quantity(balance.remaining),
        "overage": quantity(balance.overage),
        "period_start": iso(balance.period_start),
        "billing_type": ent.billing_type,
        "contract_mode": ent.contract_mode,
        "status": balance.status.value,
        "effective_state": balance.state.value,
        "priority": ent.priority,
        "starts_at": iso(ent.starts_at),
        "ends_at": iso(balance.ends_at),
        "grace_until": iso(balance.grace_until),
        "issued_at": iso(ent.issued_at),
        "auto_renew": ent.auto_renew,
        "renewal_quantity": quantity(ent.renewal_quantity),
        "parent_id": None if ent.parent_id is None else str(ent.parent_id),
        "allotment": quantity(ent.allotment),
        "rollover_max": quantity(ent.rollover_max),
        "rollover_min": quantity(ent.rollover_min),
        "filters": ent.filters or None,
        "row_version": ent.row_version,
        "created_at": iso(ent.created_at),
        "updated_at": iso(ent.updated_at),
    }


@app.command("list")
def entitlement_list(
    org: Org,
    customer: Annotated[str | None, typer.Option(help="one customer's")] = None,
    feature: Annotated[str | None, typer.Option(help="one feature's")] = None,
    status: Annotated[str | None, typer.Option(help="PENDING, ACTIVE, GRACE, ...")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    cursor: Annotated[str | None, typer.Option(help="the next cursor a page printed")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The org's entitlements by number, each with its current period's balance."""
    from meterd.core.filters import parse_filters
    from meterd.core.paging import decode, encode
    from meterd.core.timeutil import utcnow
    from meterd.services.queries import ENTITLEMENT_FILTERS

    given = {"customer_id": customer, "feature": feature, "status": status}
    filters = parse_filters(
        [(k, v) for k, v in given.items() if v is not None], ENTITLEMENT_FILTERS
    )
    page = context.get_runtime().queries.page(
        org,
        filters,
        sort="number",
        descending=False,
        cursor=decode(cursor, "number:asc", int) if cursor else None,
        limit=limit,
        now=utcnow(),
    )
    rows = [entitlement_row(*row) for row in page.rows]
    after = encode(page.next) if page.next else None
    if as_json:
        echo_json({"results": rows, "next": after, "total_count": page.total})
        return
    table(f"entitlements of {org}", _COLUMNS, ([r[c] for c in _COLUMNS] for r in rows))
    say(f"{page.total} in all" + (f"; next page: --cursor {after}" if after else ""))


@app.command("show")
def entitlement_show(
    org: Org,
    entitlement: Annotated[str, typer.Argument(help="its id, or a unique prefix")],
    as_json: JsonFlag = False,
) -> None:
    """One entitlement in full (JSON, as the API shows it; ``--json`` changes nothing)."""
    from meterd.core.timeutil import utcnow

    rt = context.get_runtime()
    echo_json(entitlement_row(*rt.queries.get(org, entitlement_id(rt, org, entitlement), utcnow())))
