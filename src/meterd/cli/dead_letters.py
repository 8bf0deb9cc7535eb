"""``meterd dlq``: dead letters, events that were not counted (list, show, replay, purge)."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.ids import resolve_uuid
from meterd.cli.output import JsonFlag, OrgFilter, echo_json, iso, say, table, when

if TYPE_CHECKING:
    from meterd.services.replay import DeadLetterReplay
    from meterd.services.values import DeadLetter

app = typer.Typer(help="Dead letters: events that were not counted.", no_args_is_help=True)

_Since = Annotated[str | None, typer.Option(help="received at or after (ISO 8601)")]
_Until = Annotated[str | None, typer.Option(help="received before (ISO 8601)")]
#: At most as many as one page of ``GET /v1/dead-letters``.
_ListLimit = Annotated[int, typer.Option(min=1, max=200, help="letters shown, at most")]
_ReplayLimit = Annotated[
    int, typer.Option(min=1, max=100_000, help="letters replayed (by the filters), at most")
]
_Cursor = Annotated[
    str | None,
    typer.Option(
        help="the next page's cursor a paged list printed (needs --org; the API's cursors too)"
    ),
]
_LetterIds = Annotated[
    list[str] | None,
    typer.Argument(help="replay exactly these letters: ids, or unique prefixes"),
]
#: The order the API's cursors name (``api/dead_letters.py``): they are interchangeable.
_SORT = "received_at:asc"


def letter_row(dl: DeadLetter) -> dict[str, Any]:
    """A dead letter (as ``DeadLetterReplay`` hands it) as JSON-ready fields."""
    return {
        "id": str(dl.id),
        "reason": dl.reason,
        "detail": dl.detail,
        "org": dl.org_id,
        "source": dl.source,
        "event_id": dl.event_id,
        "received_at": iso(dl.received_at),
        "replayed_at": iso(dl.replayed_at),
        "replay_outcome": dl.replay_outcome,
        "payload": json.loads(dl.payload),
    }


@app.command("list")
def dlq_list(
    reason: str | None = None,
    org: OrgFilter = None,
    since: _Since = None,
    until: _Until = None,
    limit: _ListLimit = 50,
    cursor: _Cursor = None,
    as_json: JsonFlag = False,
) -> None:
    """Dead letters not yet replayed, oldest first (of every org unless --org).

    With --org alone the list is paged as ``GET /v1/dead-letters`` pages it: when
    more letters follow, the next page's --cursor is printed on stderr."""
    letters = context.get_runtime().replay
    filtered = reason is not None or since is not None or until is not None
    if cursor is not None and (org is None or filtered):
        raise typer.BadParameter(
            "--cursor pages one org's letters: give --org, and no --reason, --since or --until"
        )
    next_cursor = None
    if org is not None and not filtered:
        found, next_cursor = _page(letters, org, cursor, limit)
    else:
        found = letters.find(
            reason=reason, org=org, since=when(since, None), until=when(until, None), limit=limit
        )
    rows = [letter_row(dl) for dl in found]
    if as_json:
        echo_json(rows)
    else:
        columns = ("id", "received_at", "reason", "org", "detail")
        table("dead letters", columns, ([r[c] for c in columns] for r in rows))
    if next_cursor is not None:
        typer.echo(f"next page: --cursor {next_cursor}", err=True)


def _page(
    letters: DeadLetterReplay, org: str, cursor: str | None, limit: int
) -> tuple[list[DeadLetter], str | None]:
    """One page of the org's letters after ``cursor``, and the next page's cursor
    (None on the last page), encoded as the API encodes it."""
    from datetime import datetime

    from meterd.core.paging import Cursor, decode, encode

    after = None
    if cursor:
        boundary = decode(cursor, _SORT, datetime)
        after = (boundary.value, uuid.UUID(boundary.row_id))
    found = letters.page(org, after=after, limit=limit + 1)
    shown = found[:limit]
    if len(found) <= limit or not shown:
        return shown, None
    last = shown[-1]
    return shown, encode(Cursor(_SORT, last.received_at, str(last.id), True))


@app.command("show")
def dlq_show(
    dead_letter: Annotated[str, typer.Argument(help="its id, or a unique prefix")],
    org: OrgFilter = None,
    as_json: JsonFlag = False,
) -> None:
    """One dead letter in full: reason, detail, the original payload, replay state
    (JSON; ``--json`` changes nothing)."""
    letters = context.get_runtime().replay
    found = resolve_uuid(dead_letter, lambda: letters.ids(org), "dead letter")
    echo_json(letter_row(letters.get(found, org)))


@app.command("replay")
def dlq_replay(
    letter_ids: _LetterIds = None,
    reason: str | None = None,
    org: OrgFilter = None,
    since: _Since = None,
    until: _Until = None,
    limit: _ReplayLimit = 1000,
    as_json: JsonFlag = False,
) -> None:
    """Feed dead letters through ingest again (idempotent: nothing counts twice):
    the letters named (as ``POST /v1/dead-letters/replay``), or those the filters
    match. A letter named but already replayed is skipped."""
    from meterd.core.timeutil import utcnow

    letters = context.get_runtime().replay
    if letter_ids:
        if reason is not None or since is not None or until is not None:
            raise typer.BadParameter("name letters, or filter them (--reason ...): not both")
        ids = _named(letters, letter_ids, org)
        report = letters.replay_ids(ids, now=utcnow(), org=org)
    else:
        report = letters.replay(
            now=utcnow(),
            reason=reason,
            org=org,
            since=when(since, None),
            until=when(until, None),
            limit=limit,
        )
    summary = {
        "replayed": report.replayed,
        "still_dead": report.still_dead,
        "outcomes": dict(report.outcomes),
    }
    if as_json:
        echo_json(summary, indent=None)
        return
    say(
        f"replayed {report.replayed} dead letter(s): {dict(report.outcomes)}; "
        f"{report.still_dead} failed again for the same reason and stay listed"
    )


def _named(letters: DeadLetterReplay, texts: list[str], org: str | None) -> list[uuid.UUID]:
    """The letters ``texts`` name (of ``org``, if given): each id or unique prefix must
    name one, else ``NotFoundError`` (as ``POST /v1/dead-letters/{id}/replay``)."""
    known: list[uuid.UUID] | None = None

    def ids() -> list[uuid.UUID]:
        nonlocal known
        if known is None:
            known = letters.ids(org)
        return known

    found = [resolve_uuid(text, ids, "dead letter") for text in texts]
    for letter_id in found:
        letters.get(letter_id, org)
    return list(dict.fromkeys(found))


@app.command("purge")
def dlq_purge(
    reason: str | None = None,
    org: OrgFilter = None,
    since: _Since = None,
    until: _Until = None,
    include_unreplayed: Annotated[
        bool, typer.Option(help="also delete letters never replayed: their events are lost")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="really delete")] = False,
) -> None:
    """Delete dead letters (by default only those already replayed)."""
    letters = context.get_runtime().replay
    filters: dict[str, Any] = {
        "reason": reason,
        "org_id": org,
        "since": when(since, None),
        "until": when(until, None),
        "replayed": None if include_unreplayed else True,
    }
    matching = letters.count(**filters)
    if not yes:
        say(f"{matching} dead letter(s) match; run again with --yes to delete them")
        raise typer.Exit(1)
    say(f"purged {letters.purge(**filters)} dead letter(s)")
