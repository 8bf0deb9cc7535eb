"""The long-running processes: ``worker``, ``beat``, ``api`` and ``dev`` (contract commands)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Annotated

import typer

from meterd.cli import context
from meterd.cli.output import console

#: The meterd queues (``meterd.celery_config.QUEUES``, checked by a test): written
#: here so that ``--help`` does not import Celery.
QUEUES = ("meterd.ingest", "meterd.flush", "meterd.lifecycle", "meterd.notify", "meterd.backfill")


def worker(
    concurrency: Annotated[int, typer.Option("-c", "--concurrency")] = 2,
    queues: Annotated[str, typer.Option("-Q", "--queues")] = ",".join(QUEUES),
    loglevel: Annotated[str, typer.Option("-l", "--loglevel")] = "info",
    hostname: Annotated[
        str | None,
        typer.Option(
            "-n", "--hostname", help="Celery node name, e.g. ingest1@%h (unique per worker)"
        ),
    ] = None,
) -> None:
    """Run a Celery worker for the meterd queues (this process becomes
    ``celery -A meterd.worker:app worker``). Two workers on one host need
    different ``--hostname``s: Celery tells nodes apart by name."""
    from meterd.celery_config import celery_command
    from meterd.config import get_settings

    get_settings()  # bad settings: one line here, not a traceback from celery
    argv = celery_command("worker", "-Q", queues, "-c", str(concurrency), "-l", loglevel)
    become(argv + (["-n", hostname] if hostname else []))


def become(argv: list[str]) -> None:
    """Replace this process with ``argv``: signals and the pid are the worker's own."""
    sys.stdout.flush()
    os.execv(argv[0], argv)


def beat(
    loglevel: Annotated[str, typer.Option("-l", "--loglevel")] = "info",
    redbeat: Annotated[
        bool, typer.Option(help="RedBeat scheduler: a lock in Redis makes a second beat wait")
    ] = False,
) -> None:
    """Run Celery beat: flush, lifecycle and notification dispatch on schedule."""
    from meterd.celery_config import celery_command
    from meterd.config import get_settings

    get_settings()  # bad settings: one line here, not a traceback from celery
    argv = ["beat", "-l", loglevel]
    if redbeat:
        argv += ["-S", "redbeat.RedBeatScheduler"]
    become(celery_command(*argv))


def dev(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Worker, beat and API in one process tree on the embedded default; Ctrl-C
    stops them and flushes everything to the database."""
    from meterd.config import get_settings
    from meterd.dev import run_dev

    raise typer.Exit(run_dev(get_settings(), host, port, console()))


def _terminated(_signum: int, _frame: object) -> None:
    """SIGTERM reached the API process: stop as on Ctrl-C."""
    raise KeyboardInterrupt


#: uvicorn's event loop and HTTP parser for ``meterd api``: uvloop and httptools
#: (dependencies of meterd; less CPU per request than asyncio and h11), named
#: explicitly so that a missing one fails at start instead of the API silently
#: running on the slower pair.
LOOP = "uvloop"
HTTP = "httptools"


def api(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Serve the HTTP API (OpenAPI at /docs); refuses an unsafe counter Redis. Ctrl-C or
    SIGTERM stop it gracefully (exit 0), and with it the embedded Redis it started."""
    import uvicorn

    from meterd.config import get_settings
    from meterd.dev import check_port_free
    from meterd.runtime import STORE_ERRORS
    from meterd.storage.redis_safety import check_redis, enforce

    get_settings()  # bad settings first, then the port: each in one line
    check_port_free(host, port)
    # uvicorn shuts down on SIGINT/SIGTERM, then raises the signal again: SIGTERM's
    # default action would end the process before ``main`` stops the embedded Redis.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        with contextlib.suppress(*STORE_ERRORS):  # not answering yet: /readyz will say
            rt = context.get_runtime()  # the app checks again at start (and warns if allowed)
            report = check_redis(rt.redis, operator_verified=rt.settings.redis_safety_verified)
            enforce(report, allow_unsafe=rt.settings.unsafe_redis)  # one-line error, exit 2
        uvicorn.run(
            "meterd.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop=LOOP,
            http=HTTP,
        )
    except KeyboardInterrupt:
        pass  # uvicorn has stopped serving; ``main`` stops what this process started
    finally:
        signal.signal(signal.SIGTERM, previous)
