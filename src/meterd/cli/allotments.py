"""``meterd entitlement allot|allotments``: carve a child grant out of an
entitlement, and list its children (as ``POST`` and ``GET
/v1/entitlements/{id}/allotments``: the same service calls, the same fields)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.entitlements import entitlement_id
from meterd.cli.output import JsonFlag, Org, echo_json, say, table

_Id = Annotated[str, typer.Argument(help="the parent entitlement's id, or a unique prefix")]


def entitlement_allot(
    org: Org,
    entitlement: _Id,
    customer: Annotated[str, typer.Option(help="the child customer")],
    quantity: Annotated[str, typer.Option(help="carved from the parent's current period")],
    idempotency_key: Annotated[
        str | None, typer.Option(help="a retry with it answers the same child")
    ] = None,
) -> None:
    """Carve QUANTITY out of the entitlement into a child entitlement of CUSTOMER
    (same feature, term and end; the parent's remaining drops by it). Refused when
    more is asked than the parent has remaining."""
    from meterd.core.quantity import parse_decimal_text
    from meterd.core.timeutil import utcnow

    rt = context.get_runtime()
    parent = entitlement_id(rt, org, entitlement)
    rt.queries.owned(org, parent)
    result = rt.allotments.allot(
        org,
        parent,
        customer,
        parse_decimal_text(quantity, "quantity"),
        utcnow(),
        idempotency_key=idempotency_key,
    )
    verb = "allotted" if result.created else "already allotted"
    say(f"{verb}: child entitlement {result.child.id} of {customer} ({quantity})")


def allotment_rows(org: str, text: str) -> dict[str, Any]:
    """The parent's ``allotted`` and ``remaining`` and its children (``AllotmentList``)."""
    from decimal import Decimal

    from meterd.core.quantity import format_optional_quantity, format_quantity
    from meterd.core.timeutil import isoformat, utcnow

    rt = context.get_runtime()
    parent = entitlement_id(rt, org, text)
    _, _, balance = rt.queries.get(org, parent, utcnow())
    allotted = rt.allotments.allotted([parent]).get(parent, Decimal(0))
    return {
        "parent_id": str(parent),
        "allotted": format_quantity(allotted),
        "remaining": format_optional_quantity(balance.remaining),
        "results": [
            {
                "id": str(row.id),
                "entitlement_id": str(row.child_id),
                "customer_id": row.customer_id,
                "quantity": format_quantity(row.quantity),
                "status": row.status,
                "idempotency_key": row.idempotency_key,
                "created_at": isoformat(row.created_at),
            }
            for row in rt.allotments.children(org, parent)
        ],
    }


def entitlement_allotments(org: Org, entitlement: _Id, as_json: JsonFlag = False) -> None:
    """The entitlement's child grants, oldest first, with what it has allotted and
    what remains to it."""
    found = allotment_rows(org, entitlement)
    if as_json:
        echo_json(found)
        return
    say(f"allotted {found['allotted']}, remaining {found['remaining'] or 'unlimited'}")
    table(
        "allotments",
        ["entitlement_id", "customer_id", "quantity", "status", "created_at"],
        [
            [r["entitlement_id"], r["customer_id"], r["quantity"], r["status"], r["created_at"]]
            for r in found["results"]
        ],
    )
