"""The ``meterd`` command line (Typer): one module per command group, registered in
``meterd.cli.app``. Importing this package imports no driver, Celery or web stack."""

from meterd.cli.app import app, main
from meterd.cli.exits import EXIT_REFUSED, EXIT_UNAVAILABLE

__all__ = ["EXIT_REFUSED", "EXIT_UNAVAILABLE", "app", "main"]
