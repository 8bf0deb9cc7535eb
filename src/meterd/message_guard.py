"""Every message a worker takes from meterd's queues becomes a task request or a dead letter.

Celery reads a task message in the worker's main process before any task code
runs, and kombu decodes JSON with type revival (``{"__type__": "uuid",
"__value__": ...}`` becomes an object). So, in Celery 5.x, messages any
producer can publish stop or starve a worker there:

* a body that is not ``[args, kwargs, embed]`` (``{"a": 1}``, ``null``, a
  string) raises in ``Request.__init__``: the main process exits
  ("Unrecoverable error"), the message is restored, and every restarted
  worker dies on it again;
* a message without an ``id`` header makes the consumer reconnect forever;
* a body kombu cannot decode, a tag it cannot revive (one tagged value in one
  event), a content type outside ``accept_content``, a task name the worker
  does not have, a bad ``eta``, or arguments that do not fit the task are
  logged and dropped: a whole batch lost, no dead letter.

``GuardedConsumer`` (``worker_consumer`` in the Celery configuration) reads each
message first (``read_task_message``) and hands Celery only messages Celery can
take:

* a readable one goes on, with only the headers Celery reads, each of the
  right type, and its body decoded as plain JSON (numbers exact, tags left as
  the objects they are); the worker decodes ``application/json`` that way in
  every process (``install_worker_codecs``), so the pool reads it the same way,
  and decompresses a body only up to the size bound;
* an ``ingest_batch`` message whose body is JSON but not an envelope, or
  whose arguments do not fit, is rewritten so that everything it carried is
  the batch: each event is counted or dead-lettered on its own;
* anything else (not JSON, another content type, larger than
  ``METERD_MAX_MESSAGE_BYTES``, no task name, a task meterd does not have, or
  a message Celery still fails on) is rewritten into a
  ``meterd.dead_letter_message`` request: the raw message (its first
  ``EXCERPT_BYTES``, its size and digest) is stored as a dead letter with the
  reason, by a task that retries while the database is away; the message is
  acknowledged only once the letter is stored. Should even that fail, the
  message is logged, counted (``meterd_unreadable_messages_total``) and
  acknowledged, so that it cannot hold up the queue behind it.
"""

from __future__ import annotations

import base64
import bz2
import hashlib
import inspect
import lzma
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.utils.time import maybe_iso8601, maybe_make_aware
from celery.utils.time import timezone as celery_timezone
from celery.worker.consumer import Consumer
from kombu import compression
from kombu.asynchronous.timer import to_timestamp

from meterd.celery_config import DEAD_LETTER_MESSAGE_TASK, INGEST_TASK, MAX_BACKOFF_SECONDS
from meterd.logs import get_logger
from meterd.wire_json import UnreadableJson, exact_dumps, install_json_codec, plain_loads

log = get_logger("meterd.message_guard")

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


def install_worker_codecs(max_bytes: int) -> None:
    """How this process and the pool it forks read and write message bodies: JSON as
    sent (``wire_json``: numbers exact both ways, no kombu type revival), and
    compressed bodies only up
    to ``max_bytes`` once decompressed (kombu would inflate a small bomb into
    gigabytes before any check; a body over the bound, or in a compression meterd
    does not read, is dead-lettered as undecodable)."""
    install_json_codec(plain_decoding=True)
    bounded: dict[str, Callable[[], Any]] = {
        "application/x-gzip": zlib.decompressobj,
        "application/x-bz2": bz2.BZ2Decompressor,
        "application/x-lzma": lzma.LZMADecompressor,
    }
    for content_type in compression.encoders():
        encoder, _ = compression.get_encoder(content_type)
        factory = bounded.get(content_type)
        decoder = _bounded_decompress(factory, max_bytes) if factory else _refuse_compression
        compression.register(encoder, decoder, content_type)


def _bounded_decompress(factory: Callable[[], Any], max_bytes: int) -> Callable[[bytes], bytes]:
    def decompress(body: bytes) -> bytes:
        inflated: bytes = factory().decompress(body, max_bytes + 1)
        if len(inflated) > max_bytes:
            raise ValueError(
                f"the body decompresses to more than METERD_MAX_MESSAGE_BYTES ({max_bytes:,})"
            )
        return inflated

    return decompress


def _refuse_compression(body: bytes) -> bytes:
    raise ValueError("meterd reads messages compressed with gzip, bzip2 or lzma only")


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


_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


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
        return [[payloads], {}, dict(_EMBED)]
    return [[ingest_payloads(body[0], body[1])], {}, body[2] or dict(_EMBED)]


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


def _pass_on(message: Any, readable: Readable) -> None:
    """Give Celery the checked headers and the decoded body (its raw body is read
    again, by the same plain decoder, in the pool process), or the rewritten body."""
    if readable.rewritten:
        _rewrite(message, readable.headers, readable.body)
        return
    message.headers = readable.headers
    message.content_type = "application/json"
    message.content_encoding = "utf-8"
    message._decoded_cache = readable.body


def _rewrite(message: Any, headers: dict[str, Any], body: list[Any]) -> None:
    """Make ``message`` a well-formed JSON task message in place (its delivery tag, and
    so its acknowledgement, stay the original's)."""
    message.headers = headers
    message.body = exact_dumps(body).encode("utf-8")
    message.content_type = "application/json"
    message.content_encoding = "utf-8"
    message._decoded_cache = body


class MessageGuard:
    """Reads each message before Celery does (see the module's docstring)."""

    def __init__(
        self,
        tasks: Mapping[str, Any],
        max_bytes: int,
        on_unreadable: Callable[[str], None] = lambda kind: None,
    ) -> None:
        self.tasks = {name: task.run for name, task in tasks.items() if name.startswith("meterd.")}
        self.max_bytes = max_bytes
        self.on_unreadable = on_unreadable

    def take(
        self, message: Any, handle: Callable[[Any], Any], errors: tuple[type[BaseException], ...]
    ) -> Any:
        """Hand ``message`` to Celery's ``handle``, as it is, rewritten, or as a dead
        letter; never raises but for the broker connection's own errors."""
        queue = _queue_of(message)
        try:
            verdict = read_task_message(
                headers=message.headers,
                body=message.body,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                tasks=self.tasks,
                max_bytes=self.max_bytes,
            )
        except Exception as exc:  # a message nothing above foresaw
            verdict = Unreadable(CELERY_REFUSED, f"the message could not be read: {exc!r:.300}")
        if isinstance(verdict, Readable):
            if verdict.rewritten:
                log.warning(
                    "message.read_as_batch",
                    reason="the body was not [args, kwargs, embed] of ingest_batch: each payload"
                    " it carried is counted or dead-lettered on its own",
                    queue=queue,
                )
                self.on_unreadable(REWRITTEN_BATCH)
            try:
                _pass_on(message, verdict)
                return handle(message)
            except errors:
                raise
            except Exception as exc:
                verdict = Unreadable(CELERY_REFUSED, f"Celery refused the message: {exc!r:.300}")
        record = unreadable_record(message, verdict.kind, verdict.reason, queue)
        return self.dead_letter(message, record, handle, errors)

    def dead_letter(
        self,
        message: Any,
        record: dict[str, Any],
        handle: Callable[[Any], Any],
        errors: tuple[type[BaseException], ...],
    ) -> Any:
        log.warning(
            "message.unreadable",
            kind=record["kind"],
            reason=record["reason"],
            queue=record["queue"],
            bytes=record["bytes"],
            sha256=record["sha256"],
        )
        self.on_unreadable(record["kind"])
        headers = {
            "lang": "py",
            "id": str(uuid.uuid4()),
            "task": DEAD_LETTER_MESSAGE_TASK,
            "argsrepr": f"(<unreadable message {record['sha256'][:12]}>,)",
            "kwargsrepr": "{}",
        }
        try:
            _rewrite(message, headers, [[record], {}, dict(_EMBED)])
            return handle(message)
        except errors:
            raise
        except Exception:
            log.critical(
                "message.dropped",
                reason="the unreadable message could not even be dead-lettered; acknowledged"
                " so that the queue behind it moves",
                sha256=record["sha256"],
                exc_info=True,
            )
            self.on_unreadable("dropped")
            message.ack()
            return None


def _queue_of(message: Any) -> str | None:
    info = getattr(message, "delivery_info", None)
    if isinstance(info, Mapping):
        key = info.get("routing_key")
        return str(key)[:200] if key is not None else None
    return None


class GuardedConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, with every task message read by ``MessageGuard`` first, and
    every message kombu could not make ready (a body it could not decompress, say)
    dead-lettered instead of dropped."""

    _guarded: Callable[[Any], Any] | None = None
    _guard: MessageGuard | None = None

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)
        guard = self._guard = MessageGuard(
            self.app.tasks,
            max_bytes=int(self.app.conf.get("meterd_max_message_bytes") or 32 * 1024 * 1024),
            on_unreadable=_unreadable_counter(self.app),
        )
        errors = tuple(self.connection_errors or ())

        def on_task_received(message: Any) -> Any:
            return guard.take(message, handle, errors)

        self._guarded = handle
        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        if self._guard is None or self._guarded is None:
            super().on_decode_error(message, exc)
            return
        message.errors = []
        reason = f"kombu could not read the message: {exc!r:.300}"
        record = unreadable_record(message, UNDECODABLE, reason, _queue_of(message))
        self._guard.dead_letter(message, record, self._guarded, tuple(self.connection_errors or ()))


def _unreadable_counter(app: Any) -> Callable[[str], None]:
    counter = app.conf.get("meterd_on_unreadable")
    return counter if callable(counter) else lambda kind: None


__all__ = [
    "GuardedConsumer",
    "MessageGuard",
    "Readable",
    "Unreadable",
    "install_worker_codecs",
    "read_task_message",
]
