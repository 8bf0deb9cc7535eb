"""``meterd import FILE``: backfill history older than the late window.

The file (JSON lines, or a JSON array of CloudEvents) is streamed: it is read in
chunks and decoded one event at a time, so memory holds one chunk and one batch
whatever the file's size. Each batch is counted by the backfill service in this
process (``services/backfill.py``, the same code the ``meterd.backfill_batch``
task runs), so the command can print what happened to every event: accepted,
duplicate, dead-lettered. The import is audited as one backfill (``cli:<user>``).
"""

from __future__ import annotations

import codecs
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.output import JsonFlag, Org, console, echo_json, say
from meterd.core.errors import InvalidError

#: Bytes read from the file at a time.
CHUNK_BYTES = 1 << 20


class StreamError(InvalidError):
    """The file is not JSON lines or a JSON array of events."""


class _Chunks:
    """A text buffer over a binary stream, refilled a chunk at a time."""

    def __init__(self, stream: IO[bytes]) -> None:
        from meterd.core.quantity import JsonNumber

        self.stream = stream
        self.decoder = json.JSONDecoder(parse_float=JsonNumber.from_literal, parse_constant=str)
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.done = "", 0, False

    def more(self) -> bool:
        """Read the next chunk (False at the end of the file)."""
        if self.done:
            return False
        chunk = self.stream.read(CHUNK_BYTES)
        self.done = not chunk
        self.buf = self.buf[self.pos :] + self.utf8.decode(chunk, final=self.done)
        self.pos = 0
        return True

    def skip(self, separators: str) -> str | None:
        """The next character that is not a separator (None: the end of the file)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in separators:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return None

    def value(self) -> Any:
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self.more():
                    continue
                raise StreamError(f"not JSON at character {exc.pos}: {exc.msg}") from None
            if end == len(self.buf) and not self.done and not isinstance(value, dict | list):
                self.more()  # a number or literal cut by the chunk's end: read it whole
                continue
            self.pos = end
            return value


_SPACE = " \t\r\n"


def read_events(stream: IO[bytes]) -> Iterator[Any]:
    """The values of a JSON array, or of JSON lines (any whitespace between values),
    one at a time; non-integer numbers keep their literal text (exact quantities,
    as the HTTP API reads them)."""
    chunks = _Chunks(stream)
    in_array = chunks.skip(_SPACE) == "["
    if in_array:
        chunks.pos += 1
    separators = _SPACE + "," if in_array else _SPACE
    while True:
        found = chunks.skip(separators)
        if found is None:
            if in_array:
                raise StreamError("the JSON array is not closed")
            return
        if in_array and found == "]":
            return
        yield chunks.value()


def _batches(events: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for event in events:
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_events(
    path: Annotated[Path, typer.Argument(help="JSON lines or a JSON array of CloudEvents")],
    org: Org,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """Backfill usage older than the late window into the periods that contain each
    event's time, deduplicated like any event (importing a file twice counts it
    once). Prints how many events were accepted, duplicates and dead-lettered."""
    from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn

    from meterd.core.timeutil import utcnow
    from meterd.producer import stamp_receive_time
    from meterd.services.backfill import cli_actor

    runtime = context.get_runtime()
    backfill_id = runtime.backfill.open(org, cli_actor(), "cli", utcnow())
    totals: Counter[str] = Counter()
    events = 0
    with (
        path.open("rb") as stream,
        Progress(
            TextColumn("importing"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TransferSpeedColumn(),
            TextColumn("{task.fields[events]} events"),
            console=console(),
            transient=True,
            # a bar on a terminal only: scripts and logs get the summary line
            disable=as_json or not console().is_terminal,
        ) as progress,
    ):
        task = progress.add_task("import", total=path.stat().st_size, events=0)
        try:
            for batch_no, batch in enumerate(_batches(read_events(stream), batch_size)):
                now = utcnow()
                report = runtime.backfill.backfill(
                    stamp_receive_time(batch, now),
                    org=org,
                    backfill_id=backfill_id,
                    batch_no=batch_no,
                    now=now,
                )
                totals.update(report.counts)
                events += len(batch)
                progress.update(task, completed=stream.tell(), events=events)
        except StreamError as exc:
            from meterd.core.errors import InvalidError

            raise InvalidError(f"{path}: {exc} (after {events} event(s))") from None
    dead = sum(n for outcome, n in totals.items() if outcome not in ("accepted", "duplicate"))
    summary = {
        "backfill_id": str(backfill_id),
        "events": events,
        "accepted": totals["accepted"],
        "duplicate": totals["duplicate"],
        "dead_lettered": dead,
        "dead_lettered_by_reason": {
            k: v for k, v in sorted(totals.items()) if k not in ("accepted", "duplicate")
        },
    }
    if as_json:
        echo_json(summary)
        return
    reasons = ", ".join(f"{k} {v}" for k, v in summary["dead_lettered_by_reason"].items())  # type: ignore[attr-defined]
    say(
        f"backfill {backfill_id}: {events} event(s): accepted {summary['accepted']},"
        f" duplicate {summary['duplicate']}, dead-lettered {dead}"
        + (f" ({reasons}; see meterd dlq list)" if reasons else ""),
        soft_wrap=True,
    )
