"""Structured logging (structlog): console for people, JSON for machines."""

from __future__ import annotations

import logging
import sys

import structlog

from meterd.config import redact_url


def _mask_url_passwords(
    _logger: object, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """No password of a URL reaches a log line (a database, Redis or broker URL in a
    message or an exception's text): every text value is shown as ``redact_url`` does."""
    return {key: redact_url(v) if isinstance(v, str) else v for key, v in event.items()}


def configure_logging(fmt: str = "console", level: int = logging.INFO) -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        # Plain tracebacks: rich's default shows every frame's locals, which can hold a
        # batch of events (seconds to render, in a worker's main process) or a secret.
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _mask_url_passwords,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Loggers are built per call (one log line per batch: the cost does not matter)
        # against the sys.stderr of that moment, so a replaced stream (tests, daemons)
        # is honoured.
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
