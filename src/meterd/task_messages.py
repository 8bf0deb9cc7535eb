"""What a task message is, as meterd's worker reads it before Celery does.

The rules, free of the consumer that applies them (``meterd.message_guard``):

* ``read_task_message``: whether a message can be a task request (a task
  meterd has, JSON in UTF-8, within the size bound, a Celery protocol 2 body
  ``[args, kwargs, embed]`` whose arguments fit the task) and, if so, what
  Celery may take of it: the headers it reads, each of the right type
  (``sanitised_headers``), and the body decoded as plain JSON;
* the ingest rule: an ``ingest_batch`` message whose body is JSON but not an
  envelope, or whose arguments do not fit, is the batch itself
  (``as_ingest_envelope``); an envelope's arguments are flattened into its
  payloads (``ingest_payloads``, also used by the task itself);
* the identity of an unreadable message (``unreadable_record``): its task id,
  its body (or an excerpt), size and SHA-256, and why, as its dead letter
  keeps it.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.utils.time import maybe_iso8601, maybe_make_aware
from celery.utils.time import timezone as celery_timezone
from kombu.asynchronous.timer import to_timestamp

from meterd.celery_config import INGEST_TASK, MAX_BACKOFF_SECONDS
from meterd.wire_json import UnreadableJson, plain_loads

#: What a dead letter keeps of the body of a message over the size bound (of any
#: other unreadable message it keeps the whole body).
EXCERPT_BYTES = 64 * 1024
#: How far ahead an ``eta`` may be (twice the longest wait of meterd's own retries:
#: room for clocks that disagree).
MAX_ETA_AHEAD_SECONDS = 2 * MAX_BACKOFF_SECONDS
#: The content types meterd reads (Celery's JSON; kombu sends this one).
JSON_CONTENT_TYPES = frozenset({"application/json"})
#: The encodings a JSON body may declare (none means UTF-8).
TEXT_ENCODINGS = frozenset({"", "utf-8", "utf8"})

#: Kinds of unreadable messages, the label of ``meterd_unreadable_messages_total``.
TOO_LARGE = "too_large"
NOT_JSON = "not_json"
CONTENT_TYPE = "content_type"
NO_TASK = "no_task"
UNKNOWN_TASK = "unknown_task"
NOT_AN_ENVELOPE = "not_an_envelope"
CELERY_REFUSED = "celery_refused"
UNDECODABLE = "undecodable"
REWRITTEN_BATCH = "rewritten_batch"

#: The ``embed`` of a task message with no callbacks, errbacks, chain or chord.
EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Why a message cannot be a task request (``kind`` is a metric label)."""

    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class Readable:
    """A message Celery can take: its sanitised headers and decoded body."""

    headers: dict[str, Any]
    body: list[Any]
    rewritten: bool = False


def _text(value: Any, limit: int = 200) -> str:
    return repr(value)[:limit]


def _celery_time(value: Any) -> datetime | None:
    """An ``eta`` or ``expires`` header as Celery reads it (dateutil's ``isoparse``,
    made aware, then a timestamp in the system's zone), or None where Celery would
    refuse it: a refused ``eta`` or ``expires`` is logged and the message dropped."""
    if not isinstance(value, str):
        return None
    try:
        parsed: datetime = maybe_make_aware(maybe_iso8601(value))
        to_timestamp(celery_timezone.to_system(parsed))
    except (AttributeError, ValueError, TypeError, OverflowError):
        return None
    return parsed


def _is_eta(value: Any) -> bool:
    """An ``eta`` Celery can read, at most ``MAX_ETA_AHEAD_SECONDS`` ahead: meterd's own
    retries wait no longer. A further one (a producer's) would hold the message in the
    worker's memory, redelivered after every visibility timeout: it is dropped and the
    task runs now."""
    when = _celery_time(value)
    ahead = timedelta(seconds=MAX_ETA_AHEAD_SECONDS)
    return when is not None and when <= datetime.now(UTC) + ahead


def _short(value: Any, limit: int) -> bool:
    """Text of at most ``limit`` characters (a header is kept in memory and logs)."""
    return isinstance(value, str) and len(value) <= limit


#: The headers Celery reads, and what each must be; any other header is dropped. No
#: ``timelimit``: meterd's tasks have none, and a producer's would stop a batch midway
#: (a soft limit fails the task, a hard one kills the pool process) and acknowledge it.
_HEADER_CHECKS: dict[str, Callable[[Any], bool]] = {
    "lang": lambda v: _short(v, 32),
    "root_id": lambda v: v is None or _short(v, 255),
    "parent_id": lambda v: v is None or _short(v, 255),
    "group": lambda v: v is None or _short(v, 255),
    "origin": lambda v: _short(v, 255),
    "argsrepr": lambda v: _short(v, 1024),
    "kwargsrepr": lambda v: _short(v, 1024),
    "retries": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1_000_000,
    "eta": _is_eta,
    "expires": lambda v: _celery_time(v) is not None,
    "ignore_result": lambda v: isinstance(v, bool),
}


def sanitised_headers(headers: Mapping[Any, Any], task: str) -> dict[str, Any]:
    """The headers Celery may read, each of the type it expects (the others are
    dropped, and a message without a usable ``id`` gets one). An ingest message
    never expires: meterd does not drop usage for its age on the queue (a late
    event is judged by its own time)."""
    kept = {
        name: headers[name]
        for name, check in _HEADER_CHECKS.items()
        if name in headers and headers[name] is not None and check(headers[name])
    }
    task_id = headers.get("id")
    kept["id"] = (
        task_id if isinstance(task_id, str) and 0 < len(task_id) <= 255 else str(uuid.uuid4())
    )
    kept["task"] = task
    if task == INGEST_TASK:
        kept.pop("expires", None)
    return kept


def _is_envelope(body: Any) -> bool:
    return (
        isinstance(body, list)
        and len(body) == 3
        and isinstance(body[0], list)
        and isinstance(body[1], dict)
        and (body[2] is None or isinstance(body[2], dict))
    )


def _fits(run: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> bool:
    try:
        inspect.signature(run).bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def ingest_payloads(args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Any]:
    """The payloads an ingest message's arguments carry: each positional argument's
    items (a list) or itself (``None``: nothing), then ``events=``'s, and any other
    keyword arguments as one payload that says so (dead-lettered)."""
    payloads: list[Any] = []
    for arg in args:
        payloads.extend(arg if isinstance(arg, list) else [] if arg is None else [arg])
    extra = dict(kwargs)
    if "events" in extra:
        events = extra.pop("events")
        payloads.extend(events if isinstance(events, list) else [events])
    if extra:
        payloads.append({"unexpected task keyword arguments": sorted(extra)})
    return payloads


def as_ingest_envelope(body: Any) -> list[Any]:
    """An ingest message's body, whatever it was, as ``[[payloads], {}, embed]``:
    a body that is not an envelope is the batch itself (one payload if it is not a
    list); an envelope's arguments are all payloads (``ingest_payloads``)."""
    if not _is_envelope(body):
        payloads = body if isinstance(body, list) else [] if body is None else [body]
        return [[payloads], {}, dict(EMBED)]
    return [[ingest_payloads(body[0], body[1])], {}, body[2] or dict(EMBED)]


def read_task_message(
    *,
    headers: Any,
    body: bytes | str,
    content_type: str | None,
    content_encoding: str | None,
    tasks: Mapping[str, Callable[..., Any]],
    max_bytes: int,
) -> Readable | Unreadable:
    """What Celery may take of a message, or why it cannot be a task request.
    ``tasks`` maps each task name to its function (to check the arguments fit)."""
    size = len(body)
    if size > max_bytes:
        return Unreadable(
            TOO_LARGE,
            f"the message is {size:,} bytes, over METERD_MAX_MESSAGE_BYTES ({max_bytes:,}):"
            " send smaller batches",
        )
    if not isinstance(headers, Mapping) or not isinstance(headers.get("task"), str):
        return Unreadable(
            NO_TASK,
            "not a Celery task message (protocol 2 needs a 'task' header naming the task)",
        )
    task = headers["task"]
    if task not in tasks:
        return Unreadable(UNKNOWN_TASK, f"meterd has no task named {task[:200]!r}")
    ctype = (content_type or "").split(";")[0].strip().lower()
    encoding = (content_encoding or "").strip().lower()
    if ctype not in JSON_CONTENT_TYPES or encoding not in TEXT_ENCODINGS:
        return Unreadable(
            CONTENT_TYPE,
            f"content type {content_type!r} with encoding {content_encoding!r} is not accepted:"
            " meterd reads JSON (application/json, utf-8)",
        )
    try:
        decoded = plain_loads(body)
    except UnreadableJson as exc:
        return Unreadable(NOT_JSON, f"the message body is not JSON: {exc}")
    kept = sanitised_headers(headers, task)
    if task == INGEST_TASK:
        if _is_envelope(decoded) and _fits(tasks[task], decoded[0], decoded[1]):
            return Readable(kept, decoded)
        return Readable(kept, as_ingest_envelope(decoded), rewritten=True)
    if not _is_envelope(decoded):
        return Unreadable(
            NOT_AN_ENVELOPE,
            "the message body is not a Celery protocol 2 body [args, kwargs, embed]",
        )
    if not _fits(tasks[task], decoded[0], decoded[1]):
        return Unreadable(
            NOT_AN_ENVELOPE, f"the arguments do not fit task {task!r}: {_text(decoded[:2])}"
        )
    return Readable(kept, decoded)


def unreadable_record(message: Any, kind: str, reason: str, queue: str | None) -> dict[str, Any]:
    """What a dead letter keeps of an unreadable message: the reason, the body (as
    text if it is UTF-8, else base64; only its first ``EXCERPT_BYTES`` if it is over
    the size bound), its size and SHA-256, its content type and encoding, and its
    headers (each shown shortened)."""
    raw = (
        message.body
        if isinstance(message.body, bytes)
        else str(message.body).encode("utf-8", "surrogatepass")
    )
    head = raw[:EXCERPT_BYTES] if kind == TOO_LARGE else raw
    try:
        excerpt, excerpt_encoding = head.decode("utf-8"), "text"
    except UnicodeDecodeError:
        excerpt, excerpt_encoding = base64.b64encode(head).decode("ascii"), "base64"
    headers = message.headers if isinstance(message.headers, Mapping) else {}
    task_id = headers.get("id")
    return {
        "kind": kind,
        # What makes the message itself: its task id (if it has a usable one) and
        # its body; a redelivered copy (kombu adds a ``redelivered`` header) is the
        # same message and dead-lettered once (``IngestService.dead_letter_message``).
        "message_id": task_id if isinstance(task_id, str) and len(task_id) <= 255 else None,
        "reason": reason,
        "queue": queue,
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "truncated": len(head) < len(raw),
        "body": excerpt,
        "body_encoding": excerpt_encoding,
        "content_type": _text(message.content_type, 100),
        "content_encoding": _text(message.content_encoding, 100),
        "headers": {str(k)[:100]: _text(v) for k, v in list(headers.items())[:50]},
    }


__all__ = [
    "EMBED",
    "EXCERPT_BYTES",
    "Readable",
    "Unreadable",
    "as_ingest_envelope",
    "ingest_payloads",
    "read_task_message",
    "sanitised_headers",
    "unreadable_record",
]
