"""A broker connection Celery has already let go of is a lost connection: when the
broker dies, Celery's consumer collects the connection and then closes it, and
kombu's close restores the channel's prefetched messages through a new pool built
from the connection's (now missing) client. That was an AttributeError that stopped
the worker ("Unrecoverable error: 'NoneType' object has no attribute 'hostname'",
seen in the Redis-kill test under load); as a connection error, Celery ignores it
there and the messages come back by the visibility-timeout sweep."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from kombu.common import ignore_errors
from redis.exceptions import ConnectionError as RedisConnectionError

from meterd.broker import ReliableChannel, ReliableRedisTransport


def closed_channel() -> ReliableChannel:
    channel = ReliableChannel.__new__(ReliableChannel)
    channel.connection = SimpleNamespace(client=None)  # type: ignore[assignment]
    return channel


def test_a_channel_whose_connection_was_collected_raises_a_connection_error() -> None:
    with pytest.raises(RedisConnectionError):
        closed_channel()._connparams()


def test_celery_ignores_that_error_while_it_closes_the_broken_connection() -> None:
    connection = SimpleNamespace(
        connection_errors=ReliableRedisTransport.connection_errors, channel_errors=()
    )
    ignore_errors(connection, closed_channel()._connparams)  # raises nothing
