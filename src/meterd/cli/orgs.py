"""``meterd org``: create and list organisations, set their webhook (a shortcut of
``meterd webhooks``)."""

from __future__ import annotations

from typing import Annotated

import typer

from meterd.cli import context
from meterd.cli.output import JsonFlag, Org, echo_json, escape, iso, say, table

app = typer.Typer(help="Organisations.", no_args_is_help=True)


@app.command("create")
def org_create(
    org: Annotated[str, typer.Argument(help="the new organisation's id")],
    name: str | None = None,
) -> None:
    """Create an organisation (creating one that exists changes nothing)."""
    from meterd.core.timeutil import utcnow

    context.get_runtime().catalog.create_org(org, name, utcnow())
    say(f"organisation {org} ready")


@app.command("list")
def org_list(as_json: JsonFlag = False) -> None:
    """Every organisation, by id."""
    rows = [
        {"id": o.id, "name": o.name, "created_at": iso(o.created_at)}
        for o in context.get_runtime().catalog.list_organisations()
    ]
    if as_json:
        echo_json(rows)
        return
    table("organisations", ("id", "name", "created_at"), (r.values() for r in rows))


@app.command("webhook")
def org_webhook(
    org: Org,
    url: Annotated[str | None, typer.Argument(help="omit to remove the org's endpoints")] = None,
    secret: Annotated[
        str | None,
        typer.Option(help="whsec_ + base64 of a 24..64 byte key; omitted: generated"),
    ] = None,
) -> None:
    """A shortcut: the org's webhook endpoints become this one URL (or none). See
    ``meterd webhooks`` for several endpoints."""
    from meterd.config import redact_url
    from meterd.core.errors import NotFoundError

    service = context.get_runtime().notifications
    if not service.set_webhook(org, url, secret):
        raise NotFoundError("organisation", org)
    say(f"webhook of {org}: {escape(redact_url(url or 'none'))}")
    if url is not None and secret is None:
        (endpoint,) = service.endpoints(org)
        say(f"secret: {endpoint.secret}")
