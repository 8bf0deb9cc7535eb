"""``meterd embedded status|stop``: the embedded Redis of the default settings."""

from __future__ import annotations

import typer

from meterd.cli.output import say

app = typer.Typer(
    help="The embedded Redis of the default settings (embedded://DIR).", no_args_is_help=True
)


def _embedded_url() -> str:
    from meterd.config import get_settings, redact_url
    from meterd.core.errors import InvalidError

    settings = get_settings()
    if not settings.is_embedded_redis:
        raise InvalidError(
            f"METERD_REDIS_URL is {redact_url(settings.redis_url)!r}, not the embedded server"
        )
    return settings.redis_url


@app.command("status")
def embedded_status() -> None:
    """Whether the embedded redis-server runs, where, and how many clients it has."""
    from meterd import embedded

    url = _embedded_url()
    where = embedded.embedded_dir(url)
    if not embedded.running(url):
        say(f"not running ({where})", soft_wrap=True)
        return
    say(
        f"running ({where}): {embedded.clients(url)} client(s) connected; {_owner_text(url)}",
        soft_wrap=True,
    )


def _owner_text(url: str) -> str:
    from meterd import embedded

    starter = embedded.owner(url)
    if starter is None:
        return "no starter recorded: the next meterd command done with it stops it"
    who = f"started by {starter.command or 'a process'} (pid {starter.pid})"
    if starter.alive():
        return f"{who}, which stops it when it ends"
    return f"{who}, which is gone: the next meterd command done with it stops it"


@app.command("stop")
def embedded_stop() -> None:
    """Stop the embedded redis-server (its AOF keeps the counts for the next start)."""
    from meterd import embedded

    url = _embedded_url()
    if not embedded.running(url):
        say("not running")
        return
    starter = embedded.owner(url)
    embedded.stop(url)
    if embedded.running(url):
        say("still running: see redis.log")
        return
    say("stopped")
    if starter is not None and starter.alive() and not starter.is_this_process():
        say(
            f"{starter.command or 'the process'} (pid {starter.pid}) started it and still runs:"
            " it cannot count until it is restarted",
            soft_wrap=True,
        )
