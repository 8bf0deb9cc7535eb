"""The ``meterd`` command: every command group and command registered here, from
its own module (as ``celery/bin/celery.py`` does).

Each command parses its input, calls one service, and prints. Modules import the
heavy stacks (Celery, FastAPI, SQLAlchemy, redis) inside the command functions,
so ``meterd --help`` and ``meterd --version`` start without them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from meterd import __version__
from meterd.cli import (
    alerts,
    allotments,
    corrections,
    dead_letters,
    embedded_redis,
    entitlement_changes,
    entitlement_create,
    entitlement_history,
    entitlements,
    exits,
    features,
    holds,
    import_events,
    keys,
    lifecycle,
    operate,
    orgs,
    plans,
    portal,
    publish,
    serve,
    usage,
    webhooks,
)

app = typer.Typer(
    help="meterd: asynchronous usage metering for entitlements. The organisation a"
    " command works in is --org (default: METERD_ORG).",
    no_args_is_help=True,
    # Plain help and errors: rich's help renderer costs a third of a second at start.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"meterd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """meterd: asynchronous usage metering for entitlements."""


# -- processes and operations (the contract commands) ---------------------------------
app.command()(serve.dev)
app.command()(serve.worker)
app.command()(serve.beat)
app.command()(serve.api)
app.command()(operate.status)
app.command()(operate.flush)
app.command()(operate.demo)
app.add_typer(operate.db_app, name="db")
app.add_typer(dead_letters.app, name="dlq")
app.add_typer(lifecycle.app, name="lifecycle")
app.add_typer(embedded_redis.app, name="embedded")
app.add_typer(holds.app, name="holds")

# -- the catalog ----------------------------------------------------------------------
app.add_typer(orgs.app, name="org")
app.add_typer(features.app, name="feature")
app.add_typer(plans.app, name="plan")
entitlements.app.command("create")(entitlement_create.entitlement_create)
entitlements.app.command("update")(entitlement_changes.entitlement_update)
entitlements.app.command("suspend")(entitlement_changes.entitlement_suspend)
entitlements.app.command("resume")(entitlement_changes.entitlement_resume)
entitlements.app.command("terminate")(entitlement_changes.entitlement_terminate)
entitlements.app.command("void")(entitlement_changes.entitlement_void)
entitlements.app.command("reset")(entitlement_changes.entitlement_reset)
entitlements.app.command("allot")(allotments.entitlement_allot)
entitlements.app.command("allotments")(allotments.entitlement_allotments)
entitlements.app.command("periods")(entitlement_history.entitlement_periods)
entitlements.app.command("transitions")(entitlement_history.entitlement_transitions)
app.add_typer(entitlements.app, name="entitlement")
app.add_typer(keys.app, name="keys")
app.add_typer(alerts.app, name="alerts")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(portal.app, name="portal")

# -- usage ----------------------------------------------------------------------------
app.command()(publish.publish)
app.command("import")(import_events.import_events)
app.command()(usage.usage)
app.command()(usage.balance)
app.add_typer(corrections.app, name="events")


def main() -> None:
    """The console script: run the app, each error mapped to one line and an exit status."""
    exits.run(app)
