"""``meterd portal``: customer portal links, and the key that signs them."""

from __future__ import annotations

from typing import Annotated

import typer

from meterd.cli import context
from meterd.cli.output import JsonFlag, Org, echo_json, say

app = typer.Typer(help="Customer portal links (read-only pages of one customer).",
                  no_args_is_help=True)  # fmt: skip


@app.command("link")
def portal_link(
    org: Org,
    customer_id: Annotated[str, typer.Argument(help="the customer the page shows")],
    expires_in: Annotated[
        int, typer.Option(help="seconds the link works: 60 up to 2592000 (30 days)")
    ] = 3600,
    as_json: JsonFlag = False,
) -> None:
    """Mint a portal link, as POST /v1/portal-tokens. The URL's base is METERD_PUBLIC_URL;
    without it, the path is printed (put the API's address before it)."""
    from meterd.core.timeutil import isoformat, utcnow

    rt = context.get_runtime()
    minted = rt.portal_tokens.mint(org, customer_id, utcnow(), expires_in)
    base = (rt.settings.public_url or "").rstrip("/")
    url = f"{base}/portal#token={minted.token}"
    expires_at = isoformat(minted.expires_at)
    if as_json:
        echo_json({"token": minted.token, "url": url, "expires_at": expires_at})
        return
    say(f"portal link for {customer_id} of {org}, until {expires_at}:")
    print(url)


@app.command("rotate-key")
def portal_rotate_key() -> None:
    """Retire the key that signs portal links: the next link is signed with a new one.
    Links already handed out keep working until they expire."""
    from meterd.core.timeutil import utcnow

    retired = context.get_runtime().portal_tokens.rotate(utcnow())
    say(f"retired {retired}" if retired else "no current key: the next link creates one")
