"""Every route of the HTTP API has a ``meterd`` command that does what it does, or a
reason written here why it has none: a route added without either fails this test,
and so does a mapping to a command the CLI does not have."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import typer

from meterd.api.app import create_app
from meterd.cli import app

Route = tuple[str, str]

#: Each route, and the command that covers it.
CLI_FOR: dict[Route, tuple[str, ...]] = {
    ("GET", "/v1/customers/{customer_id}/features/{feature}"): ("balance",),
    ("POST", "/v1/events"): ("publish",),
    ("GET", "/v1/usage"): ("usage",),
    ("GET", "/v1/status"): ("status",),
    ("GET", "/v1/events"): ("events", "list"),
    ("POST", "/v1/events/void"): ("events", "void"),
    ("POST", "/v1/events/amend"): ("events", "amend"),
    ("POST", "/v1/features"): ("feature", "create"),
    ("GET", "/v1/features"): ("feature", "list"),
    ("GET", "/v1/features/{key}"): ("feature", "show"),
    ("PATCH", "/v1/features/{key}"): ("feature", "update"),
    ("POST", "/v1/plans"): ("plan", "create"),
    ("GET", "/v1/plans"): ("plan", "list"),
    ("GET", "/v1/plans/{plan_id}"): ("plan", "show"),
    ("PATCH", "/v1/plans/{plan_id}"): ("plan", "update"),
    ("GET", "/v1/entitlements"): ("entitlement", "list"),
    ("GET", "/v1/entitlements/{entitlement_id}"): ("entitlement", "show"),
    ("POST", "/v1/entitlements"): ("entitlement", "create"),
    ("PATCH", "/v1/entitlements/{entitlement_id}"): ("entitlement", "update"),
    ("POST", "/v1/entitlements/{entitlement_id}/suspend"): ("entitlement", "suspend"),
    ("POST", "/v1/entitlements/{entitlement_id}/resume"): ("entitlement", "resume"),
    ("POST", "/v1/entitlements/{entitlement_id}/terminate"): ("entitlement", "terminate"),
    ("POST", "/v1/entitlements/{entitlement_id}/void"): ("entitlement", "void"),
    ("POST", "/v1/entitlements/{entitlement_id}/reset"): ("entitlement", "reset"),
    ("GET", "/v1/entitlements/{entitlement_id}/periods"): ("entitlement", "periods"),
    ("GET", "/v1/entitlements/{entitlement_id}/transitions"): ("entitlement", "transitions"),
    ("GET", "/v1/api-keys"): ("keys", "list"),
    ("POST", "/v1/api-keys"): ("keys", "create"),
    ("POST", "/v1/api-keys/{key_id}/rotate"): ("keys", "rotate"),
    ("GET", "/v1/dead-letters"): ("dlq", "list"),
    ("GET", "/v1/dead-letters/{dead_letter_id}"): ("dlq", "show"),
    ("POST", "/v1/dead-letters/{dead_letter_id}/replay"): ("dlq", "replay"),
    ("POST", "/v1/dead-letters/replay"): ("dlq", "replay"),
    ("POST", "/v1/entitlements/{entitlement_id}/allotments"): ("entitlement", "allot"),
    ("GET", "/v1/entitlements/{entitlement_id}/allotments"): ("entitlement", "allotments"),
    ("POST", "/v1/alert-rules"): ("alerts", "add"),
    ("GET", "/v1/alert-rules"): ("alerts", "list"),
    ("GET", "/v1/alert-rules/{rule_id}"): ("alerts", "show"),
    ("DELETE", "/v1/alert-rules/{rule_id}"): ("alerts", "remove"),
    ("GET", "/v1/holds/{hold_id}"): ("holds", "show"),
    ("POST", "/v1/holds/{hold_id}/settle"): ("holds", "settle"),
    ("POST", "/v1/holds/{hold_id}/release"): ("holds", "release"),
    ("POST", "/v1/webhook-endpoints"): ("webhooks", "add"),
    ("GET", "/v1/webhook-endpoints"): ("webhooks", "list"),
    ("DELETE", "/v1/webhook-endpoints/{endpoint_id}"): ("webhooks", "remove"),
    ("GET", "/v1/notifications"): ("webhooks", "deliveries"),
    ("GET", "/v1/notifications/{notification_id}"): ("webhooks", "deliveries"),
    ("POST", "/v1/notifications/{notification_id}/redeliver"): ("webhooks", "redeliver"),
    ("POST", "/v1/portal-tokens"): ("portal", "link"),
}

_SEED_PAGE = (
    "a seed-compatible page, kept for the callers of the system meterd replaced;"
    " `meterd entitlement list` shows the same entitlements"
)
_DOCS = "the API's own documentation, for a browser or a client generator"
_PORTAL = (
    "the customer portal, read with a portal token by the customer's browser;"
    " `meterd portal link` mints one, `meterd balance` and `meterd usage` show the same"
)

#: Routes with no command on purpose, and why.
NO_CLI: dict[Route, str] = {
    ("GET", "/healthz"): "a probe for the orchestrator; `meterd status` is the operator's view",
    ("GET", "/readyz"): "a probe for the orchestrator; `meterd status` is the operator's view",
    ("GET", "/metrics"): "scraped by Prometheus; `meterd status` is the operator's view",
    ("GET", "/openapi.json"): _DOCS,
    ("GET", "/docs"): _DOCS,
    ("GET", "/redoc"): _DOCS,
    ("GET", "/console"): "a web page for a browser: each of its sections calls a /v1 route",
    ("GET", "/v1/customers"): "the console's customer list; `meterd entitlement list`"
    " shows every customer's entitlements (and searches by customer id)",
    ("POST", "/v1/customers/{customer_id}/features/{feature}/reserve"): "the application's"
    " gate on its request path (atomic check-and-consume under an idempotency key);"
    " an operator records usage with `meterd publish`, and reads room with `meterd balance`",
    ("GET", "/entitlements/customer/unique/{customer_id}"): _SEED_PAGE,
    ("GET", "/api/web/v4/tenants/{tenantid}/entitlements/{type}"): _SEED_PAGE,
    ("GET", "/api/workspace/entitlement-operations/entitlements"): _SEED_PAGE,
    ("GET", "/portal"): _PORTAL,
    ("GET", "/portal/api/overview"): _PORTAL,
    ("GET", "/portal/api/usage"): _PORTAL,
}


def _leaf_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The app's routes, those of included routers too (FastAPI keeps them apart)."""
    for route in routes:
        if hasattr(route, "original_router"):
            yield from _leaf_routes(route.original_router.routes)
        else:
            yield route


def api_routes() -> set[Route]:
    """(method, path) of every route the API serves (HEAD, which GET implies, left out)."""
    web = create_app(lambda: None, check_redis=False)  # type: ignore[arg-type, return-value]
    return {
        (method, route.path)
        for route in _leaf_routes(web.routes)
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }


def cli_commands() -> set[tuple[str, ...]]:
    """The path of every command of ``meterd`` (``("dlq", "replay")``, ``("publish",)``)."""

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                yield from walk(sub, (*path, name))
        else:
            yield path

    return set(walk(typer.main.get_command(app), ()))


def test_every_api_route_has_a_command_or_a_reason_for_none() -> None:
    routes = api_routes()
    assert len(routes) >= 30  # the walk found the included routers' routes
    assert sorted(routes - CLI_FOR.keys() - NO_CLI.keys()) == []


def test_every_route_named_here_is_served() -> None:
    """A route renamed or removed from the API is renamed or removed here too."""
    assert sorted((CLI_FOR.keys() | NO_CLI.keys()) - api_routes()) == []
    assert sorted(CLI_FOR.keys() & NO_CLI.keys()) == []


def test_every_command_a_route_maps_to_exists() -> None:
    commands = cli_commands()
    assert ("dlq", "replay") in commands  # the walk reached the groups' commands
    assert sorted(set(CLI_FOR.values()) - commands) == []
