"""What every command shares to read its input and print its output.

Quantities are printed as the API prints them (``format_quantity``: ``"10000"``,
not ``"10000.000000"``); ids are printed whole; ``--json`` documents go to stdout
through ``typer.echo`` (never wrapped by rich). Nothing here imports a driver,
Celery or the web stack: ``meterd --help`` stays fast.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from meterd.core.errors import InvalidError, NotFoundError
from meterd.core.timeutil import as_utc

if TYPE_CHECKING:
    from rich.console import Console

#: ``--json`` on every read command.
JsonFlag = Annotated[bool, typer.Option("--json", help="one JSON document, for scripts")]
#: The organisation a command works in: ``--org`` everywhere, or METERD_ORG.
Org = Annotated[
    str,
    typer.Option("--org", envvar="METERD_ORG", help="the organisation (default: METERD_ORG)"),
]
#: An org as a filter (dead letters): every org's when left out, whatever METERD_ORG says.
OrgFilter = Annotated[str | None, typer.Option("--org", help="one organisation's only")]
#: Rollover of a new grant or plan (``meterd.core.rollover``; fixed at creation).
RolloverMax = Annotated[
    str | None,
    typer.Option(
        help="a renewed term carries MIN(this, MAX(what the term before left,"
        " --rollover-min)); needs --auto-renew; fixed at creation"
    ),
]
RolloverMin = Annotated[str | None, typer.Option(help="default 0")]


@functools.cache
def console() -> Console:
    """The rich console, built on first print (rich is not imported for ``--help``)."""
    from rich.console import Console

    return Console()


def escape(text: str) -> str:
    """``text`` printed as itself, never as rich markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def say(message: str, *, soft_wrap: bool = False) -> None:
    console().print(message, soft_wrap=soft_wrap)


def echo_json(document: Any, *, indent: int | None = 2) -> None:
    typer.echo(json.dumps(document, indent=indent))


def table(title: str, columns: Sequence[str], rows: Iterable[Iterable[Any]]) -> None:
    """A table, every cell as text. Ids (columns ``id`` and ``*_id``) are printed whole
    and on one line, whatever the terminal's width: they are copied into the next
    command; the other columns wrap to make room."""
    from rich.table import Table

    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    view = Table(title=title)
    for i, column in enumerate(columns):
        if column == "id" or column.endswith("_id"):
            widest = max((len(row[i]) for row in cells), default=len(column))
            view.add_column(column, no_wrap=True, min_width=max(widest, len(column)))
        else:
            view.add_column(column, overflow="fold")
    for row in cells:
        view.add_row(*(escape(cell) for cell in row))
    console().print(view)


def quantity(value: Decimal | None, unlimited: str | None = None) -> str | None:
    """A quantity as the API prints it ("10000", "0.5"); None stays ``unlimited``."""
    from meterd.core.quantity import format_quantity

    return unlimited if value is None else format_quantity(value)


def optional_quantity(text: str | None, what: str = "quantity") -> Decimal | None:
    """A quantity option (``parse_decimal_text``'s grammar); None when left out."""
    from meterd.core.quantity import parse_decimal_text

    return None if text is None else parse_decimal_text(text, what)


def when(value: str | None, default: datetime | None) -> datetime | None:
    """An ISO 8601 option as UTC (``default`` when left out)."""
    if value is None:
        return default
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 date-time") from None


def iso(value: datetime | None) -> str | None:
    """A time as the API prints it: UTC with microseconds and a ``Z``."""
    from meterd.core.timeutil import isoformat_or_none

    return isoformat_or_none(value)


def parse_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a UUID") from None


_INTEGER = re.compile(r"^-?[0-9]{1,16}$")


def dimensions(pairs: list[str] | None, option: str) -> dict[str, Any] | None:
    """``key=value`` pairs as dimension filters (checked by the catalog): a value is
    an integer if it reads as one, a boolean for ``true``/``false``, else text."""
    if not pairs:
        return None
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InvalidError(f"{option} {pair[:80]!r} must be key=value, e.g. model=gpt-4o")
        if key in found:
            raise InvalidError(f"{option} names {key[:80]!r} twice")
        value: Any = text
        if _INTEGER.match(text):
            value = int(text)
        elif text in ("true", "false"):
            value = text == "true"
        found[key] = value
    return found


def read_json(path: Path | None) -> Any:
    """The JSON document in ``path`` (stdin for None or ``-``); a file that cannot be
    read or is not JSON is refused with one line."""
    import sys

    from meterd.wire_json import plain_loads

    from_stdin = path is None or str(path) == "-"
    name = "stdin" if from_stdin else str(path)
    try:
        text = sys.stdin.read() if from_stdin or path is None else path.read_text("utf-8")
        return plain_loads(text)  # numbers with their literal text, as the API reads them
    except FileNotFoundError:
        raise NotFoundError("events file", name) from None
    except OSError as exc:
        raise InvalidError(f"cannot read {name}: {exc.strerror or exc}") from None
    except ValueError as exc:  # UnreadableJson, UnicodeDecodeError
        raise InvalidError(f"{name} is not JSON: {exc}") from None
