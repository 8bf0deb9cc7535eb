"""``meterd webhooks``: the org's webhook endpoints (add, list, remove) and the
delivery log (deliveries, redeliver), as ``/v1/webhook-endpoints`` and
``/v1/notifications`` do."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.ids import resolve_uuid
from meterd.cli.output import JsonFlag, Org, echo_json, escape, iso, say, table
from meterd.config import redact_url

app = typer.Typer(help="Webhook endpoints and their deliveries.", no_args_is_help=True)


@app.command("add")
def webhooks_add(
    org: Org,
    url: Annotated[str, typer.Argument(help="http:// or https:// URL")],
    secret: Annotated[
        str | None, typer.Option(help="whsec_ + base64 of a 24..64 byte key; omitted: generated")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Add an endpoint: every notification of the org is POSTed to it, signed (Standard
    Webhooks). The secret is printed once."""
    from meterd.core.timeutil import utcnow

    made = context.get_runtime().notifications.add_endpoint(org, url, secret, utcnow())
    row = {"id": str(made.endpoint.id), "url": redact_url(made.endpoint.url), "secret": made.secret}
    if as_json:
        echo_json(row)
        return
    say(f"endpoint {row['id']}: {escape(row['url'])}")
    say(f"secret: {made.secret}")


@app.command("list")
def webhooks_list(
    org: Org,
    show_secrets: Annotated[bool, typer.Option(help="print each whole secret")] = False,
    as_json: JsonFlag = False,
) -> None:
    """The org's endpoints, oldest first."""
    rows = [
        {
            "id": str(e.id),
            "url": redact_url(e.url),
            "secret": e.secret if show_secrets else e.secret[:10] + "...",
            "created_at": iso(e.created_at),
        }
        for e in context.get_runtime().notifications.endpoints(org)
    ]
    if as_json:
        echo_json(rows)
        return
    table("webhook endpoints", ("id", "url", "secret", "created_at"), (r.values() for r in rows))


@app.command("remove")
def webhooks_remove(
    org: Org, endpoint: Annotated[str, typer.Argument(help="the endpoint's id, or a prefix")]
) -> None:
    """Remove an endpoint; its pending deliveries are cancelled."""
    from meterd.core.errors import NotFoundError
    from meterd.core.timeutil import utcnow

    service = context.get_runtime().notifications
    endpoint_id = resolve_uuid(endpoint, lambda: [e.id for e in service.endpoints(org)], "endpoint")
    if not service.remove_endpoint(org, endpoint_id, utcnow()):
        raise NotFoundError("webhook endpoint", str(endpoint_id))
    say(f"endpoint {endpoint_id} removed")


@app.command("deliveries")
def webhooks_deliveries(
    org: Org,
    status: Annotated[
        str | None, typer.Option(help="pending, delivered, failed or no_webhook")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="notifications shown")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """The org's latest notifications, each delivery and its attempts (every call
    counted; the first and the latest 19 shown)."""
    views = context.get_runtime().notifications.page(org, status=status, limit=limit)
    rows: list[dict[str, Any]] = [
        {
            "id": v.notification.id,
            "type": v.notification.type,
            "created_at": iso(v.notification.created_at),
            "status": v.notification.delivery,
            "deliveries": [
                {
                    "endpoint_id": str(d.endpoint_id),
                    "url": redact_url(d.url),
                    "status": d.status,
                    "total_attempts": d.total_attempts,
                    "attempts": [
                        {
                            "number": a.number,
                            "at": iso(a.at),
                            "status_code": a.status_code,
                            "error": a.error,
                            "duration_ms": a.duration_ms,
                        }
                        for a in d.tries
                    ],
                }
                for d in v.deliveries
            ],
        }
        for v in views
    ]
    if as_json:
        echo_json(rows)
        return
    table(
        "deliveries",
        ("id", "type", "created_at", "status", "url", "delivery", "attempts", "last"),
        (
            (
                r["id"],
                r["type"],
                r["created_at"],
                r["status"],
                d["url"],
                d["status"],
                d["total_attempts"],
                (d["attempts"][-1]["error"] or d["attempts"][-1]["status_code"])
                if d["attempts"]
                else "",
            )
            for r in rows
            for d in (
                r["deliveries"] or [{"url": "", "status": "", "total_attempts": "", "attempts": []}]
            )
        ),
    )


@app.command("redeliver")
def webhooks_redeliver(
    org: Org, notification: Annotated[str, typer.Argument(help="the notification's id (ntf_...)")]
) -> None:
    """Queue a notification again to every endpoint (nothing changes while it is pending)."""
    from meterd.core.timeutil import utcnow

    queued = context.get_runtime().notifications.redeliver(org, notification, utcnow())
    say(f"{notification}: " + ("queued again" if queued else "still pending: unchanged"))
