"""``meterd.testing.PrivateRedis``, the one starter of a private redis-server the
benches and the e2e tests share: AOF survives a kill -9, no persistence does not,
a server that exits is reported, and the context manager leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from meterd.embedded import bundled_redis_server
from meterd.testing import PrivateRedis


def test_with_aof_a_kill_and_start_again_keeps_what_was_written(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, binary=bundled_redis_server(), aof=True)
    server.start()
    try:
        port = server.port
        redis.Redis.from_url(server.url).set("k", "v")
        server.kill()
        assert not server.alive()
        server.start()
        assert server.port == port
        assert redis.Redis.from_url(server.url).get("k") == b"v"
    finally:
        server.stop()


def test_without_persistence_a_restart_starts_empty(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, binary=bundled_redis_server())
    server.start()
    try:
        redis.Redis.from_url(server.url).set("k", "v")
        server.kill()
        server.start()
        assert redis.Redis.from_url(server.url).get("k") is None
    finally:
        server.stop()
    assert not server.alive()


def test_the_context_manager_stops_it_and_removes_its_directory() -> None:
    with PrivateRedis(binary=bundled_redis_server(), args=("--maxmemory", "7mb")) as server:
        client = redis.Redis.from_url(server.url)
        assert client.config_get("maxmemory") == {"maxmemory": str(7 * 1024 * 1024)}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        directory = server.directory
        assert directory.is_dir()
    assert not server.alive()
    assert not directory.exists()


def test_a_server_that_exits_at_start_fails_the_start(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, binary=bundled_redis_server(), args=("--no-such-option",))
    with pytest.raises(RuntimeError, match="exited with code"):
        server.start()
