"""Operating a running meterd: ``status``, ``flush``, ``db upgrade`` and ``demo``
(contract commands)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.output import console, echo_json, escape, say

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Create or migrate the database schema (Alembic)."""
    from meterd.config import get_settings, redact_url
    from meterd.storage.migrate import upgrade

    url = get_settings().database_url
    upgrade(url, revision)
    say(f"database at [bold]{escape(redact_url(url))}[/bold] is at revision {revision}")


def flush() -> None:
    """Move every pending count into the database now."""
    from meterd.core.timeutil import utcnow

    reports = context.get_runtime().flush.flush_all(utcnow(), max_batches=1000)
    periods = sum(r.periods for r in reports)
    say(f"flushed {len(reports)} batch(es), {periods} period update(s)")


def status(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document, for scripts")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="refresh until Ctrl-C")] = False,
    sample: Annotated[float, typer.Option(help="seconds to measure events/s over")] = 1.0,
) -> None:
    """Queues (ready and unacked), flush lag, dead letters, events/s, workers alive."""
    from meterd.celery_config import create_app
    from meterd.config import get_settings

    with create_app(get_settings()) as celery_app:
        _show_status(celery_app, as_json=as_json, watch=watch, sample=sample)


def _show_status(celery_app: Any, *, as_json: bool, watch: bool, sample: float) -> None:
    from rich.live import Live

    from meterd.cli.status_view import status_view
    from meterd.ops import gather

    rt = context.get_runtime()
    if as_json:
        echo_json(gather(rt, celery_app, sample_seconds=sample).as_json())
        return
    if not watch:
        console().print(status_view(gather(rt, celery_app, sample_seconds=sample)))
        return
    with Live(console=console(), auto_refresh=False) as live:
        try:
            while True:
                live.update(status_view(gather(rt, celery_app, sample_seconds=sample)))
                live.refresh()
        except KeyboardInterrupt:
            pass


def demo(
    customers: int = 20,
    events: int = 20_000,
    batch_size: int = 500,
) -> None:
    """Create sample data and push a stream of events through a real worker."""
    from meterd.config import get_settings, redact_url
    from meterd.demo import DemoPlan, run_demo
    from meterd.storage.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    say(
        f"[bold]meterd demo[/bold]: database {escape(redact_url(settings.database_url))}, "
        f"redis {escape(redact_url(settings.redis_url))}"
    )
    ok = run_demo(
        context.get_runtime(),
        DemoPlan(customers=customers, events=events, batch_size=batch_size),
        console(),
    )
    # The embedded Redis: stopped on the way out only if this demo started it (``main``);
    # one `meterd dev` started stays up for dev.
    raise typer.Exit(0 if ok else 1)
