"""``meterd entitlement update|suspend|resume|terminate``: change one entitlement."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.entitlements import entitlement_id
from meterd.cli.output import Org, iso, say, when
from meterd.core.domain import ContractMode

_Id = Annotated[str, typer.Argument(help="the entitlement's id, or a unique prefix")]
_Reason = Annotated[str, typer.Option(help="recorded in the audit trail")]
_Version = Annotated[
    int | None, typer.Option("--version", help="refuse unless the row is at this row_version")
]
_NONE = "none"


def entitlement_update(
    org: Org,
    entitlement: _Id,
    version: _Version = None,
    quantity: Annotated[
        str | None, typer.Option(help=f"the current period's; {_NONE!r}: unlimited")
    ] = None,
    renewal_quantity: Annotated[str | None, typer.Option(help=f"{_NONE!r}: unset")] = None,
    ends: Annotated[str | None, typer.Option(help=f"ISO 8601; {_NONE!r}: open-ended")] = None,
    priority: Annotated[int | None, typer.Option(help="burn-down order (±1,000,000)")] = None,
    contract_mode: ContractMode | None = None,
    auto_renew: Annotated[bool | None, typer.Option("--auto-renew/--no-auto-renew")] = None,
) -> None:
    """Change quantity, renewal quantity, end, priority, contract mode or auto-renew
    (as PATCH /v1/entitlements/{id}). With ``--version`` it is refused unless the row
    is still at that row_version; without, it applies to the row as just read."""
    from meterd.core.quantity import parse_decimal_text
    from meterd.core.timeutil import utcnow
    from meterd.services.catalog import UNSET, EntitlementChange

    def amount(text: str | None, what: str) -> Any:
        if text is None:
            return UNSET
        return None if text == _NONE else parse_decimal_text(text, what)

    rt = context.get_runtime()
    ent_id = entitlement_id(rt, org, entitlement)
    if version is None:
        version = rt.queries.owned(org, ent_id)[0].row_version
    change = EntitlementChange(
        row_version=version,
        quantity=amount(quantity, "quantity"),
        renewal_quantity=amount(renewal_quantity, "renewal_quantity"),
        ends_at=UNSET if ends is None else None if ends == _NONE else when(ends, None),
        priority=priority,
        contract_mode=contract_mode,
        auto_renew=auto_renew,
    )
    rt.catalog.update_entitlement(org, ent_id, change, utcnow())
    ent, _, _ = rt.queries.get(org, ent_id, utcnow())
    say(f"entitlement {ent.id} updated (row_version {ent.row_version})")


def _change_status(
    org: str, entitlement: str, action: str, reason: str, version: int | None
) -> None:
    from meterd.core.lifecycle import OperatorAction
    from meterd.core.timeutil import utcnow

    rt = context.get_runtime()
    ent_id = entitlement_id(rt, org, entitlement)
    rt.queries.owned(org, ent_id)
    ent = rt.catalog.change_status(
        ent_id, OperatorAction(action), utcnow(), reason=reason, expected_version=version
    )
    say(f"entitlement {ent.id} is {ent.status} (row_version {ent.row_version})")


def entitlement_suspend(
    org: Org, entitlement: _Id, reason: _Reason = "", version: _Version = None
) -> None:
    """Suspend: usage is refused (dead-lettered as suspended) until resumed."""
    _change_status(org, entitlement, "suspend", reason, version)


def entitlement_resume(
    org: Org, entitlement: _Id, reason: _Reason = "", version: _Version = None
) -> None:
    """Resume a suspended entitlement; the lifecycle job catches up what fell due meanwhile."""
    _change_status(org, entitlement, "resume", reason, version)


def entitlement_terminate(
    org: Org, entitlement: _Id, reason: _Reason = "", version: _Version = None
) -> None:
    """Terminate (final): no more usage counts on it."""
    _change_status(org, entitlement, "terminate", reason, version)


def _at_step(
    step: str, org: str, entitlement: str, reason: str, at: str | None, version: int | None
) -> Any:
    """Run the catalog's void or reset of one entitlement of the org, from --at."""
    from meterd.core.timeutil import utcnow

    rt = context.get_runtime()
    ent_id = entitlement_id(rt, org, entitlement)
    rt.queries.owned(org, ent_id)
    return getattr(rt.catalog, step)(
        ent_id, utcnow(), at=when(at, None), reason=reason, expected_version=version, actor="cli"
    )


def entitlement_void(
    org: Org,
    entitlement: _Id,
    reason: _Reason = "",
    at: Annotated[
        str | None, typer.Option(help="void from this instant (ISO 8601; default now; not past)")
    ] = None,
    version: _Version = None,
) -> None:
    """Void: from --at (default now) no more usage counts on it; usage timed before
    still does."""
    ent = _at_step("void_entitlement", org, entitlement, reason, at, version)
    since = iso(ent.terminated_at)
    say(f"entitlement {ent.id} is void from {since} (row_version {ent.row_version})")


def entitlement_reset(
    org: Org,
    entitlement: _Id,
    reason: _Reason = "",
    at: Annotated[
        str | None, typer.Option(help="reset at this instant (ISO 8601; default now; not past)")
    ] = None,
    version: _Version = None,
) -> None:
    """Reset: close the current period at --at (default now) and open a fresh one from
    it to the period's end, with the period's quantity and nothing consumed."""
    ent = _at_step("reset_entitlement", org, entitlement, reason, at, version)
    say(f"entitlement {ent.id} reset (row_version {ent.row_version})")
