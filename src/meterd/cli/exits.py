"""How a command ends: one error family mapped to one line and one exit status, once.

``main`` runs the app; a refused command (not found, conflict, invalid, bad
settings) exits 2, a store that did not answer exits 75 (EX_TEMPFAIL: the same
command may work later). On the way out the embedded Redis this command started
is stopped unless another process uses it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from meterd.core.errors import MeterdError, UnavailableError

#: Exit status of a command refused by meterd (not found, conflict, invalid).
EXIT_REFUSED = 2
#: Exit status when a store did not answer: the same command may work later
#: (EX_TEMPFAIL of sysexits.h).
EXIT_UNAVAILABLE = 75


def unanswered_errors() -> tuple[type[Exception], ...]:
    """What a driver raises when a store or the broker did not answer: the command may
    work later, so it exits like ``UnavailableError``. Imported only when an error
    is being mapped (the drivers are not loaded for ``--help``)."""
    import kombu.exceptions

    from meterd.runtime import STORE_ERRORS

    return (*STORE_ERRORS, kombu.exceptions.OperationalError)


def unanswered_message(exc: Exception) -> str:
    """One line: which store, whether it did not answer (down, unreachable) or
    answered with an error, and the first line of the driver's own message."""
    import redis
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    detail: BaseException = exc
    if isinstance(exc, DBAPIError):
        store, detail = "the database", exc.orig if exc.orig is not None else exc
        answered = not isinstance(exc, (OperationalError, InterfaceError))
    elif isinstance(exc, redis.RedisError):
        store = "Redis"
        answered = not isinstance(exc, (redis.ConnectionError, redis.TimeoutError))
    else:
        store, answered = "the broker", False
    first_line = next((line.strip() for line in str(detail).splitlines() if line.strip()), "")
    reason = first_line[:200] or type(detail).__name__
    return f"{store} {'failed' if answered else 'did not answer'}: {reason}"


def print_error(message: str) -> None:
    """The error as one line, whatever the terminal's width (no markup in the text), with
    the password of any URL in it masked (a driver's message may quote its URL)."""
    from meterd.cli.output import console, escape
    from meterd.config import redact_url

    console().print(f"[red]error:[/red] {escape(redact_url(message))}", soft_wrap=True)


def _driver_loaded() -> bool:
    """Whether a store's or the broker's driver was imported: if none was, no error
    can be one of theirs (and mapping one must not import them)."""
    return any(name in sys.modules for name in ("redis", "sqlalchemy", "kombu"))


def release_embedded_redis() -> None:
    """Leave no server behind: stop the embedded Redis if this command started it (or
    used one whose starter is gone) and no other process uses it, and say so when it
    keeps running. A server another live process started (`meterd dev`) is left alone."""
    if "meterd.embedded" not in sys.modules:
        return  # nothing that could start the embedded server was even imported
    import kombu.pools

    from meterd import embedded
    from meterd.cli.output import say
    from meterd.config import SettingsError, get_settings
    from meterd.runtime import reset_runtime

    try:
        settings = get_settings()
    except SettingsError:  # settings that do not parse: nothing was started
        return
    url = settings.redis_url
    if not settings.is_embedded_redis or not embedded.used_here(url):
        return
    ours = embedded.ours_to_stop(url)  # started here, or its starter is gone
    reset_runtime()  # our own connections are not "another process"
    kombu.pools.reset()  # type: ignore[no-untyped-call]  # nor Celery's pooled broker connections
    if embedded.release(url) and ours:
        say(
            f"the embedded redis-server ({embedded.embedded_dir(url)}) keeps running: "
            "other processes use it. The next meterd command done with it stops it, "
            "or `meterd embedded stop`.",
            soft_wrap=True,
        )


def _problems(exc: MeterdError) -> list[str]:
    """The lines to print: one per bad setting for ``SettingsError``, else the message."""
    from meterd.config import SettingsError

    return exc.problems if isinstance(exc, SettingsError) else [str(exc)]


def run(app: Callable[[], object]) -> None:
    """Run ``app`` with the error family mapped to a line and an exit status."""
    try:
        app()
    except MeterdError as exc:
        for problem in _problems(exc):
            print_error(problem)
        sys.exit(EXIT_UNAVAILABLE if isinstance(exc, UnavailableError) else EXIT_REFUSED)
    except Exception as exc:
        if not _driver_loaded() or not isinstance(exc, unanswered_errors()):
            raise
        print_error(unanswered_message(exc))
        sys.exit(EXIT_UNAVAILABLE)
    finally:
        release_embedded_redis()
