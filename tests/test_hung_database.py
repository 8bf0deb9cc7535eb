"""A database that hangs (the connection pool times out) is an unavailable store, as one
that refuses connections is: the meters read falls back, the API answers 503, tasks wait."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from meterd.runtime import STORE_ERRORS
from meterd.storage.meters import MeterStore, MeterStoreUnavailable


class HungSessions:
    """A session factory whose pool has no connection to give."""

    def __call__(self) -> Any:
        raise PoolTimeoutError("QueuePool limit of size 5 overflow 10 reached, timed out")


def test_reading_meters_from_a_hung_database_is_unavailable_not_a_crash() -> None:
    with pytest.raises(MeterStoreUnavailable, match="did not answer"):
        MeterStore(HungSessions()).meters_of("acme")  # type: ignore[arg-type]


def test_a_pool_timeout_is_waited_out_and_answered_503_like_a_refused_connection() -> None:
    assert any(issubclass(PoolTimeoutError, error) for error in STORE_ERRORS)
