"""A Redis broker transport that cannot lose a message to a killed worker.

kombu's Redis transport takes a message with ``BRPOP`` and records it as
unacknowledged afterwards, in the worker process; a worker SIGKILLed in
between (the reply may sit unread in its socket) loses the message for good
(celery/celery#4354, celery/kombu#305). This transport takes messages with
``broker_pop.lua``, which pops and records in one atomic step; everything
else (publishing, acks, the visibility-timeout restore) is kombu's own.

Waiting: a script cannot block, so when every queue is empty the channel
waits with ``BLMOVE q q RIGHT LEFT timeout`` on its first queue: that blocks
until a message arrives and only rotates it inside the same list (nothing
leaves the queue), then the next poll pops with the script. Other queues are
looked at at least every ``brpop_timeout`` seconds (1 s).

A Redis that refuses writes (``maxmemory`` reached) counts as a lost
connection here, so a worker waits it out instead of exiting.

Workers and producers configured by meterd use it for ``redis://`` and
``redis+socket://`` broker URLs (``reliable_url`` rewrites the scheme to the
alias registered here). Producers elsewhere need nothing special: the
messages and queues are kombu's.

A held message is read back as plain JSON (``ReliableQoS``), as it was read when
taken (``readable_envelope``): kombu's type revival never sees a producer's JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ExecAbortError, OutOfMemoryError, ReadOnlyError

from meterd.logs import get_logger
from meterd.lua import script_source

log = get_logger("meterd.broker")
_POP_SCRIPT = script_source("broker_pop")


class ReliableQoS(kombu_redis.QoS):
    """kombu's record of unacknowledged messages, read back as plain JSON.

    kombu reads a held message back (the visibility-timeout sweep for a dead
    worker's messages, a closing channel for its prefetched ones) with type
    revival: a producer's header ``{"__type__": "uuid", "__value__": "x"}``
    raised there and stopped the worker at every start ("Unrecoverable error"),
    and a message whose headers are null could not be marked redelivered and
    was dropped ("Could not restore message")."""

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        def restore_transaction(pipe: Any) -> None:
            held = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            self._remove_from_indices(tag, pipe)
            if not held:
                return
            record = held_record(held)
            if record is None:
                log.critical(
                    "message.dropped",
                    reason="a held message's record is not JSON meterd can read back",
                    record=repr(held[:200]),
                )
                return
            self.channel._do_restore_message(*record, pipe, leftmost)

        with self.channel.conn_or_acquire(client) as conn:
            conn.transaction(restore_transaction, self.unacked_key)


def held_record(held: bytes | str) -> tuple[dict[str, Any], Any, Any] | None:
    """A record of kombu's unacked hash, ``[message, exchange, routing key]``, as plain
    JSON, its message's headers a dict (kombu marks the message redelivered there; a
    message taken with other headers is dead-lettered, so it loses nothing it needs)."""
    try:
        message, exchange, routing_key = json.loads(held)
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(message, dict):
        return None
    if not isinstance(message.get("headers"), dict):
        message["headers"] = {}
    return message, exchange, routing_key


class ReliableChannel(kombu_redis.Channel):
    QoS = ReliableQoS
    _waiting = False  # the last poll found every queue empty: block before the next

    def _prefixed(self, key: str) -> str:
        return f"{self.global_keyprefix or ''}{key}"

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        """A closed connection is a lost connection, not an AttributeError. When the
        broker dies, Celery's consumer collects the connection (its ``client`` goes)
        and then closes it; kombu's close restores the channel's prefetched messages
        through a new pool built from that client, and the missing client stopped the
        worker ("Unrecoverable error: 'NoneType' object has no attribute 'hostname'",
        seen under load). As a connection error it is ignored there: the messages
        stay in the unacked hash and come back by the visibility-timeout sweep."""
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection is closed")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        return params

    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        lists = [self._q_for_pri(q, pri) for pri in self.priority_steps for q in queues]
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        if self._waiting:
            first = self._prefixed(lists[0])
            args: list[Any] = ["BLMOVE", first, first, "RIGHT", "LEFT", timeout or 0]
        else:
            keys = [self._prefixed(k) for k in lists]
            keys += [self._prefixed(self.unacked_index_key), self._prefixed(self.unacked_key)]
            args = ["EVAL", _POP_SCRIPT, len(keys), *keys, time.time()]
        self.client.connection.send_command(*args)

    def _brpop_read(self, **options: Any) -> bool:
        command = "BLMOVE" if self._waiting else "EVAL"
        try:
            try:
                reply = self.client.parse_response(self.client.connection, command, **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if self._waiting:
                # Woken by a message (or the timeout): pop with the script next time.
                self._waiting = False
                raise Empty()
            if not reply:
                self._waiting = True
                raise Empty()
            dest, item = reply
            dest = bytes_to_str(dest)
            if self.global_keyprefix:
                dest = dest.removeprefix(self.global_keyprefix)
            dest = dest.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            self.connection._deliver(readable_envelope(item, dest), dest)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _receive_one(self, c: Any) -> bool | None:
        """A broadcast (Celery's remote control: a Redis channel anyone who can publish
        to the broker can PUBLISH to) read as plain JSON; one that is no kombu message
        is logged and dropped. kombu's own read revives type tags and hands on anything
        that decodes, and the worker exited on it ("Unrecoverable error")."""
        try:
            response = c.parse_response()
        except self.connection_errors:
            self._in_listen = None
            raise
        if not isinstance(response, list | tuple):
            return None
        payload = self._handle_message(c, response)
        if not bytes_to_str(payload["type"]).endswith("message") or not payload["data"]:
            return None
        channel = bytes_to_str(payload["channel"])
        if channel[0] == "/":
            _, _, channel = channel.partition(".")
        try:
            message = json.loads(payload["data"])
        except (ValueError, RecursionError):
            message = None
        if not _is_envelope(message):
            log.warning(
                "broadcast.dropped",
                channel=channel[:200],
                reason="not a kombu message",
                data=repr(payload["data"][:200]),
            )
            raise Empty()
        delivered: bool = self._deliver_fanout_message(message, channel.split("/", 1)[0])
        return delivered


#: The content type of an item that was not a kombu message at all (``readable_envelope``).
UNREADABLE_CONTENT_TYPE = "application/x-meterd-unreadable"


def _is_envelope(payload: Any) -> bool:
    """Whether kombu can make a message of ``payload`` without raising."""
    if not isinstance(payload, dict):
        return False
    properties = payload.get("properties")
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_tag"), str):
        return False
    info = properties.get("delivery_info")
    if not isinstance(info, dict) or not {"exchange", "routing_key"} <= info.keys():
        return False
    if not isinstance(payload.get("headers", {}), dict | None):
        return False
    body, encoding = payload.get("body"), properties.get("body_encoding")
    if body is None:
        return True
    if not isinstance(body, str) or encoding not in (None, "utf-8", "base64"):
        return False
    if encoding == "base64":
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return False
    return True


def readable_envelope(item: bytes | str, queue: str) -> dict[str, Any]:
    """The kombu message an item of a queue list is, read as plain JSON (no kombu type
    revival). An item kombu could not make a message of (pushed by hand: not JSON,
    no delivery tag, a body that does not decode) becomes a stand-in message whose
    body is the item itself, so that it is dead-lettered like any unreadable message
    instead of stopping the worker. An item without a delivery tag is not recorded
    as unacknowledged by ``broker_pop.lua``, so a worker killed between taking it
    and recording the stand-in loses it."""
    try:
        payload = json.loads(item)
    except (ValueError, RecursionError):
        payload = None
    if _is_envelope(payload):
        return payload  # type: ignore[no-any-return]
    # broker_pop.lua recorded it as unacked under the tag it carried, if any: keep
    # that tag, so the stand-in's acknowledgement removes the record.
    properties = payload.get("properties") if isinstance(payload, dict) else None
    tag = properties.get("delivery_tag") if isinstance(properties, dict) else None
    raw = item if isinstance(item, bytes) else item.encode("utf-8", "surrogatepass")
    return {
        "body": base64.b64encode(raw).decode("ascii"),
        "content-encoding": "binary",
        "content-type": UNREADABLE_CONTENT_TYPE,
        "headers": {},
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": tag if isinstance(tag, str) else str(uuid.uuid4()),
            "delivery_info": {"exchange": "", "routing_key": queue},
            "delivery_mode": 2,
            "priority": 0,
        },
    }


class ReliableRedisTransport(kombu_redis.Transport):
    Channel = ReliableChannel
    #: A Redis that refuses writes (at ``maxmemory``: taking, acknowledging or
    #: restoring a message; a replica made read-only by a failover) is waited out
    #: like a lost connection: Celery's consumer reconnects with backoff, and an
    #: acknowledgement that failed is logged (the message comes back after the
    #: visibility timeout; redelivery is harmless), instead of the worker stopping
    #: with "Unrecoverable error".
    connection_errors = (
        *kombu_redis.Transport.connection_errors,
        OutOfMemoryError,
        ExecAbortError,
        ReadOnlyError,
    )


SCHEME = "meterd-redis"
TRANSPORT_ALIASES[SCHEME] = "meterd.broker:ReliableRedisTransport"


def reliable_url(url: str) -> str:
    """The broker URL with the reliable transport for plain Redis URLs; others unchanged."""
    for scheme in ("redis+socket://", "redis://"):
        if url.startswith(scheme):
            return SCHEME + url.removeprefix("redis")
    return url
