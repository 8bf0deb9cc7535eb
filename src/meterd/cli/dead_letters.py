"""``meterd dlq``: dead letters, events that were not counted (list, show, replay, purge)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.ids import resolve_uuid
from meterd.cli.output import JsonFlag, OrgFilter, echo_json, iso, say, table, when

if TYPE_CHECKING:
    from meterd.services.values import DeadLetter

app = typer.Typer(help="Dead letters: events that were not counted.", no_args_is_help=True)

_Since = Annotated[str | None, typer.Option(help="received at or after (ISO 8601)")]
_Until = Annotated[str | None, typer.Option(help="received before (ISO 8601)")]


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
    limit: int = 50,
    as_json: JsonFlag = False,
) -> None:
    """Dead letters not yet replayed, oldest first (of every org unless --org)."""
    letters = context.get_runtime().replay.find(
        reason=reason, org=org, since=when(since, None), until=when(until, None), limit=limit
    )
    rows = [letter_row(dl) for dl in letters]
    if as_json:
        echo_json(rows)
        return
    columns = ("id", "received_at", "reason", "org", "detail")
    table("dead letters", columns, ([r[c] for c in columns] for r in rows))


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
    reason: str | None = None,
    org: OrgFilter = None,
    since: _Since = None,
    until: _Until = None,
    limit: int = 1000,
    as_json: JsonFlag = False,
) -> None:
    """Feed dead letters through ingest again (idempotent: nothing counts twice)."""
    from meterd.core.timeutil import utcnow

    report = context.get_runtime().replay.replay(
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
