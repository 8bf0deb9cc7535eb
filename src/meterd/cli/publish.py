"""``meterd publish``: send a file of CloudEvents to the ingest queue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meterd.cli.output import read_json, say


def publish(
    path: Annotated[
        Path | None, typer.Argument(help="JSON file (event or array); - for stdin")
    ] = None,
    batch_size: int = 500,
) -> None:
    """Publish CloudEvents usage events to meterd.ingest_batch in batches. An event
    without ``time`` is stamped with the time the file was read (RFC 3339, UTC)."""
    from meterd.celery_config import create_app
    from meterd.config import get_settings
    from meterd.core.timeutil import utcnow
    from meterd.producer import publish_batches, stamp_receive_time
    from meterd.wire_json import install_json_codec

    payload = read_json(path)
    received_at = utcnow()
    events = stamp_receive_time(payload if isinstance(payload, list) else [payload], received_at)
    install_json_codec(plain_decoding=False)  # each number published as the file wrote it
    with create_app(get_settings()) as celery_app:
        messages = publish_batches(celery_app, events, batch_size)
    say(f"published {len(events)} event(s) in {messages} message(s)")
