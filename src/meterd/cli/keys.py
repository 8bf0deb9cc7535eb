"""``meterd keys``: API keys (stored hashed, scoped to one org)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated

import typer

from meterd.cli import context
from meterd.cli.ids import match_prefix
from meterd.cli.output import JsonFlag, Org, echo_json, say, table, when

if TYPE_CHECKING:
    from meterd.runtime import Runtime
    from meterd.services.api_keys import KeyInfo, Permission

app = typer.Typer(help="API keys (stored hashed, scoped to one org).", no_args_is_help=True)

_PERMISSION_HELP = "a permission, e.g. ENTITLEMENTS:VIEW (repeat for several; see docs/api.md)"
_KeyId = Annotated[str, typer.Argument(help="the key's id (16 hex), or a unique prefix")]


def _limit_text(key: KeyInfo) -> str:
    if key.limit is None:
        return "unlimited"
    own = "" if key.rate_limit is None and key.rate_burst is None else " (own)"
    return f"{key.limit.rate}/s burst {key.limit.burst}{own}"


def _permissions(texts: list[str]) -> list[Permission]:
    """``--permission`` values as permissions: an unknown one is refused naming them all."""
    from meterd.services.api_keys import Permission

    try:
        return [Permission(p) for p in texts]
    except ValueError as exc:
        known = ", ".join(p.value for p in Permission)
        raise typer.BadParameter(f"{exc}; one of {known}") from None


def key_id(rt: Runtime, org: str, text: str) -> str:
    """The org's key ``text`` names: whole, or a unique prefix of its id."""
    return match_prefix(text, (k.id for k in rt.api_keys.list(org)), "API key")


@app.command("create")
def keys_create(
    org: Org,
    permission: Annotated[list[str], typer.Option(help=_PERMISSION_HELP)],
    name: str = "",
    expires_at: Annotated[
        str | None, typer.Option(help="RFC 3339; the key is refused after it")
    ] = None,
    rate_limit: Annotated[
        int | None,
        typer.Option(help="requests a second; 0: unlimited; default METERD_API_RATE_LIMIT"),
    ] = None,
    burst: Annotated[int | None, typer.Option(help="bucket size; default twice the rate")] = None,
) -> None:
    """Issue an API key. The key is printed once; only its hash is stored."""
    from meterd.core.timeutil import utcnow

    permissions = _permissions(permission)
    token, row = context.get_runtime().api_keys.create(
        org,
        permissions,
        utcnow(),
        name=name,
        expires_at=when(expires_at, None),
        rate_limit=rate_limit,
        rate_burst=burst,
    )
    say(f"key {row.id} for {org} ({row.permissions}):")
    print(token)


@app.command("list")
def keys_list(org: Org, as_json: JsonFlag = False) -> None:
    """The org's keys: never their secrets. Last use is written about once a minute."""
    from meterd.core.timeutil import isoformat_or_none, isoformat_seconds

    keys = context.get_runtime().api_keys.list(org)
    if as_json:
        times = ("created_at", "last_used_at", "expires_at", "revoked_at")
        echo_json(
            [
                {
                    **dataclasses.asdict(k),
                    **{f: isoformat_or_none(getattr(k, f)) for f in times},
                }
                for k in keys
            ]
        )
        return
    columns = ("id", "name", "status", "permissions", "last used", "expires", "limit")
    rows = (
        (
            k.id,
            k.name,
            k.status,
            " ".join(k.permissions),
            isoformat_seconds(k.last_used_at) or "never",
            isoformat_seconds(k.expires_at) or "never",
            _limit_text(k),
        )
        for k in keys
    )
    table(f"API keys of {org}", columns, rows)


@app.command("rotate")
def keys_rotate(
    org: Org,
    key: _KeyId,
    old_valid_until: Annotated[
        str, typer.Option(help="RFC 3339: the old key keeps working until then")
    ],
    expires_at: Annotated[str | None, typer.Option(help="the new key's expiry")] = None,
    permission: Annotated[
        list[str] | None,
        typer.Option(
            help="narrow the new key to this permission, among the old key's (repeat for"
            " several; left out: the old key's)"
        ),
    ] = None,
) -> None:
    """A new key with the same org, name, permissions (or fewer: --permission) and
    limits; the old one keeps working until --old-valid-until. The new key is printed
    once."""
    from meterd.core.timeutil import isoformat, utcnow

    rt = context.get_runtime()
    old_id = key_id(rt, org, key)
    until = when(old_valid_until, None)
    assert until is not None
    token, row = rt.api_keys.rotate(
        old_id,
        until,
        utcnow(),
        org=org,
        expires_at=when(expires_at, None),
        permissions=_permissions(permission) if permission else None,
    )
    say(f"key {row.id} replaces {old_id} (which works until {isoformat(until)}):")
    print(token)


@app.command("limit")
def keys_limit(
    org: Org,
    key: _KeyId,
    rate_limit: Annotated[
        int | None, typer.Option(help="requests a second; 0: unlimited; omit: the default")
    ] = None,
    burst: Annotated[int | None, typer.Option(help="bucket size; omit: the default")] = None,
) -> None:
    """Set a key's own rate limit (other API processes apply it within seconds)."""
    rt = context.get_runtime()
    found = key_id(rt, org, key)
    rt.api_keys.set_limits(found, rate_limit, burst)
    say(_limit_text(rt.api_keys.get(found)) + f" for key {found}")


@app.command("revoke")
def keys_revoke(org: Org, key: _KeyId) -> None:
    """Revoke a key (it stops working within seconds)."""
    from meterd.core.errors import NotFoundError
    from meterd.core.timeutil import utcnow

    rt = context.get_runtime()
    found = key_id(rt, org, key)
    if not rt.api_keys.revoke(found, utcnow()):
        raise NotFoundError("active key", found)
    say(f"key {found} revoked")
