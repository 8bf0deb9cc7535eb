"""The data format guard (meterd/storage/data_format.py): a worker, beat or API
process takes over a counter Redis only in a format it reads, or once nothing of
another format waits in it; ``meterd status`` says which."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis.exceptions import OutOfMemoryError

from meterd import worker
from meterd.api.app import create_app
from meterd.ops import data_format_state
from meterd.runtime import Runtime
from meterd.storage import data_format
from meterd.storage.data_format import UNVERSIONED, DataFormatError, claim, inspect
from meterd.testing import event

from .conftest import NOW


def stored(rt: Runtime) -> Any:
    raw = rt.redis.get(rt.redis_keys.data_format)
    return None if raw is None else int(raw)


def count_one(rt: Runtime) -> None:
    """An accepted event leaves counts, a record and a marker waiting in Redis."""
    from .helpers import grant

    grant(rt, quantity="10")
    rt.ingest.ingest([event(time=NOW)], now=NOW)


def test_a_redis_of_the_versions_before_the_key_holds_the_unversioned_format(
    runtime: Runtime,
) -> None:
    count_one(runtime)
    found = inspect(runtime.redis, runtime.redis_keys)
    assert (found.stored, found.recorded) == (UNVERSIONED, False)
    assert found.waiting["unflushed counts"] > 0
    assert found.waiting["events waiting for the log"] == 1
    assert found.waiting["dedupe marker generations"] > 0


def test_a_start_on_a_redis_without_the_key_records_this_versions_format(
    runtime: Runtime,
) -> None:
    count_one(runtime)
    claim(runtime.redis, runtime.redis_keys)
    assert stored(runtime) == data_format.WRITES


def test_an_older_format_this_version_reads_is_taken_over_with_data_waiting(
    runtime: Runtime,
) -> None:
    count_one(runtime)
    runtime.redis.set(runtime.redis_keys.data_format, 1)
    found = claim(runtime.redis, runtime.redis_keys, writes=2, reads=frozenset({1, 2}))
    assert found.readable and not found.drain_needed
    assert stored(runtime) == 2


def test_a_format_this_version_does_not_read_is_refused_while_data_waits(
    runtime: Runtime,
) -> None:
    count_one(runtime)
    runtime.redis.set(runtime.redis_keys.data_format, 1)
    with pytest.raises(DataFormatError) as refused:
        claim(runtime.redis, runtime.redis_keys, writes=2, reads=frozenset({2}))
    message = str(refused.value)
    assert "format 1 (drain needed" in message
    assert "1 events waiting for the log" in message
    assert "meterd flush" in message
    assert stored(runtime) == 1


def test_a_newer_format_is_refused_while_data_waits(runtime: Runtime) -> None:
    count_one(runtime)
    runtime.redis.set(runtime.redis_keys.data_format, data_format.WRITES + 1)
    with pytest.raises(DataFormatError, match="written by a newer meterd"):
        claim(runtime.redis, runtime.redis_keys)
    assert stored(runtime) == data_format.WRITES + 1


def test_a_format_this_version_does_not_read_is_taken_over_once_drained(
    runtime: Runtime,
) -> None:
    runtime.redis.set(runtime.redis_keys.data_format, 7)
    found = claim(runtime.redis, runtime.redis_keys)
    assert not found.readable and not found.drain_needed
    assert stored(runtime) == data_format.WRITES


def test_a_key_that_holds_no_version_is_refused_while_data_waits(runtime: Runtime) -> None:
    count_one(runtime)
    runtime.redis.set(runtime.redis_keys.data_format, "v2")
    with pytest.raises(DataFormatError, match="a version this one does not know"):
        claim(runtime.redis, runtime.redis_keys)


class _Full:
    """A client whose writes a full Redis (noeviction) refuses."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def set(self, *_: Any, **__: Any) -> None:
        raise OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")


def test_a_full_redis_in_this_versions_format_is_taken_over_unrecorded(
    runtime: Runtime,
) -> None:
    count_one(runtime)
    found = claim(_Full(runtime.redis), runtime.redis_keys)
    assert found.readable and not found.recorded
    assert stored(runtime) is None  # recorded by a later start


def test_a_full_redis_in_an_older_format_is_not_taken_over_unrecorded(
    runtime: Runtime,
) -> None:
    count_one(runtime)
    with pytest.raises(OutOfMemoryError):
        claim(_Full(runtime.redis), runtime.redis_keys, writes=2, reads=frozenset({1, 2}))


def test_status_says_whether_a_drain_is_needed(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    count_one(runtime)
    assert not data_format_state(runtime).drain_needed
    monkeypatch.setattr(data_format, "WRITES", 2)
    monkeypatch.setattr(data_format, "READS", frozenset({2}))
    state = data_format_state(runtime)
    assert state.drain_needed
    assert state.refusal is not None and "Drain it with the version that wrote it" in state.refusal


def test_the_status_view_shows_the_format_and_a_blocked_upgrade(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from meterd.cli.status_view import status_view
    from meterd.ops import Status

    count_one(runtime)
    monkeypatch.setattr(data_format, "WRITES", 2)
    monkeypatch.setattr(data_format, "READS", frozenset({2}))
    status = Status(
        queues=[],
        flush_lag_seconds=None,
        dead_letters={},
        events_total={},
        events_per_second=None,
        workers=[],
        data_format=data_format_state(runtime),
    )
    console = Console(record=True, width=400)
    console.print(status_view(status))
    text = console.export_text()
    assert "format 1 (drain needed; this version writes 2, reads 2)" in text
    assert "upgrade blocked" in text


def start_worker_on(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, sender: object = "w@host"
) -> None:
    """The worker's (a hostname as sender) or beat's (a Service) start hook on the
    test's Redis (its safety aside: a test double's settings cannot be read through
    the wrapper)."""
    settings = runtime.settings.model_copy(update={"unsafe_redis": True})
    monkeypatch.setattr(worker, "get_settings", lambda: settings)
    monkeypatch.setattr(worker, "redis_client_for", lambda _s: _Unclosed(runtime.redis))
    worker._refuse_unsafe_redis(sender)


def test_a_worker_does_not_start_on_a_format_it_does_not_read(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    count_one(runtime)
    runtime.redis.set(runtime.redis_keys.data_format, data_format.WRITES + 1)
    with pytest.raises(SystemExit) as exited:
        start_worker_on(runtime, monkeypatch)
    assert exited.value.code == worker.EXIT_UNSAFE_REDIS
    logged = capsys.readouterr().out
    assert "worker not started" in logged
    assert "written by a newer meterd" in logged
    assert stored(runtime) == data_format.WRITES + 1


def test_beat_does_not_start_on_a_format_it_does_not_read(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    count_one(runtime)
    runtime.redis.set(runtime.redis_keys.data_format, data_format.WRITES + 1)
    with pytest.raises(SystemExit) as exited:
        start_worker_on(runtime, monkeypatch, sender=object())
    assert exited.value.code == worker.EXIT_UNSAFE_REDIS
    assert "beat not started" in capsys.readouterr().out


def test_a_worker_starts_on_the_unversioned_format_and_records_its_own(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    count_one(runtime)
    start_worker_on(runtime, monkeypatch)  # does not exit
    assert stored(runtime) == data_format.WRITES


def test_the_api_does_not_start_on_a_format_it_does_not_read(runtime: Runtime) -> None:
    count_one(runtime)
    runtime.redis.set(runtime.redis_keys.data_format, data_format.WRITES + 1)
    app = create_app(lambda: runtime, publish_events=lambda _e: None)
    with pytest.raises(DataFormatError), TestClient(app):
        pass


class _Unclosed:
    """The test's client, handed to code that closes what it is given."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def close(self) -> None:
        pass
