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
message first (``meterd.task_messages.read_task_message``, where the rules of
what a task message is live) and hands Celery only messages Celery can take:

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

import bz2
import lzma
import uuid
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from celery.worker.consumer import Consumer
from kombu import compression

from meterd.celery_config import DEAD_LETTER_MESSAGE_TASK
from meterd.logs import get_logger
from meterd.task_messages import (
    CELERY_REFUSED,
    EMBED,
    REWRITTEN_BATCH,
    UNDECODABLE,
    Readable,
    Unreadable,
    read_task_message,
    unreadable_record,
)
from meterd.wire_json import exact_dumps, install_json_codec

log = get_logger("meterd.message_guard")


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
            _rewrite(message, headers, [[record], {}, dict(EMBED)])
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
    "install_worker_codecs",
]
