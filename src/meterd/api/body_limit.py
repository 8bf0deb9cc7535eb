"""Limits on a request before any route reads it: the body's size, counted while
it is read, and its shape; the URL's encoding.

A pure ASGI middleware (``InputLimits``), so that it sees the body as the server
streams it:

* **Size.** A ``Content-Length`` over the limit is answered 413 before a byte is
  read; a body sent without one (chunked) is counted chunk by chunk and answered
  413 as soon as it passes the limit, so no request makes the API hold more than
  ``METERD_MAX_BODY_BYTES``.
* **Shape.** Every body meterd takes is JSON, so a body must be UTF-8 (RFC 8259;
  a NUL byte, and so UTF-16 or UTF-32, is refused) and may nest arrays and
  objects at most ``MAX_JSON_DEPTH`` levels deep: checked on the bytes, without
  recursion, before any JSON decoder (which would raise ``RecursionError`` past
  about 1,000 levels) or validator sees it.
* **URL.** The path and query string must be UTF-8 once percent-decoded: the
  server would otherwise replace a bad byte with U+FFFD and a route would read a
  customer id nobody sent.

Each refusal is a problem-details answer (``api.errors.problem``) that says what
the limit is.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meterd.api.errors import problem

#: How deep a request body may nest arrays and objects (a batch of events is 1, an
#: event 2, its ``data`` 3; an event itself may nest at most ``events.MAX_EVENT_DEPTH``).
MAX_JSON_DEPTH = 32
#: Bodies larger than this are checked in a worker thread, not on the event loop.
_IN_LOOP = 64 * 1024
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether the JSON text ``body`` (UTF-8) nests arrays and objects deeper than
    ``limit``, or has brackets that do not close. Linear in the body, free of
    recursion and of Python loops over bytes: escapes are dropped (``\\\\`` pairs
    first, then ``\\"``), string contents removed (every other piece between
    quotes), what is left reduced to its brackets, ``{}`` written as ``[]``; each
    round then removes the innermost pairs, so the brackets of a JSON text of depth
    d are gone after exactly d rounds. (A ``[`` closed by ``}`` passes here; the
    decoder refuses it.)"""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = unescaped.split(b'"')[::2] if b'"' in unescaped else [unescaped]
    brackets = b"".join(outside).translate(_AS_SQUARE, _NOT_BRACKETS)
    too_deep = b"[" * (limit + 1)  # a run that deep: no need to reduce further
    for _ in range(limit):
        if not brackets:
            return False
        if too_deep in brackets:
            return True
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def _url_problem(scope: Scope) -> str | None:
    raw_path: bytes = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
    for what, raw in (("path", raw_path), ("query string", scope.get("query_string", b""))):
        try:
            unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return f"the {what} is not UTF-8 once percent-decoded"
    return None


def _body_problem(body: bytes) -> str | None:
    if b"\x00" in body:
        return "the body contains a NUL byte: a JSON body must be UTF-8 text"
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"the body is not UTF-8 (byte {exc.start}): a JSON body must be UTF-8 text"
    if nesting_depth_exceeds(body, MAX_JSON_DEPTH):
        return (
            f"the body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"
            " (or does not close them)"
        )
    return None


class InputLimits:
    """The ASGI middleware: ``max_body_bytes`` is ``Settings.max_body_bytes``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self) -> str:
        return (
            f"the request body is larger than {self.max_body_bytes:,} bytes"
            " (METERD_MAX_BODY_BYTES): send it in smaller requests"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = _url_problem(scope)
        if refusal is not None:
            await problem(400, refusal)(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await problem(413, self._too_large())(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before the body was complete
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await problem(413, self._too_large())(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if len(body) > _IN_LOOP:  # up to ~1 s for 10 MiB nested 32 deep: off the loop
            refusal = await run_in_threadpool(_body_problem, body)
        else:
            refusal = _body_problem(body) if body else None
        if refusal is not None:
            await problem(400, refusal)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            # The server has checked it is a number; be safe anyway.
            return int(text) if text.isdigit() and len(text) < 20 else None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the whole body once, then the server's own
    messages (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            message: dict[str, Any] = {"type": "http.request", "body": body, "more_body": False}
            return message
        return await receive()

    return replay
