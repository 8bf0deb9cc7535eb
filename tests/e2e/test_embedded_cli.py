"""CLI commands on the embedded default leave no redis-server behind (issue 13)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from meterd import embedded

from .conftest import ONCE_IN_DEFAULT

pytestmark = [pytest.mark.e2e, ONCE_IN_DEFAULT]

METERD = shutil.which("meterd") or f"{Path(sys.executable).parent}/meterd"


def meterd(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERD_")}
    return subprocess.run(
        [METERD, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_command_that_started_the_embedded_redis_stops_it_when_done(tmp_path: Path) -> None:
    assert meterd(tmp_path, "db", "upgrade").returncode == 0
    result = meterd(tmp_path, "status", "--sample", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / ".meterd" / "appendonly.aof").exists() or any(
        (tmp_path / ".meterd").glob("appendonly*")
    ), "the command did use the embedded server"
    assert not embedded.running(f"embedded://{tmp_path / '.meterd'}")
    assert "keeps running" not in result.stdout


def test_a_command_leaves_running_a_server_it_did_not_start(tmp_path: Path) -> None:
    assert meterd(tmp_path, "db", "upgrade").returncode == 0  # status needs a database
    url = f"embedded://{tmp_path / '.meterd'}"
    embedded.ensure_running(url)  # as `meterd dev` or a worker would have
    try:
        assert meterd(tmp_path, "status", "--sample", "0").returncode == 0
        assert embedded.running(url)
        stopped = meterd(tmp_path, "embedded", "stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert not embedded.running(url)
    finally:
        embedded.stop(url)


def test_the_server_a_process_started_keeps_running_while_another_uses_it(
    tmp_path: Path,
) -> None:
    url = f"embedded://{tmp_path / '.meterd'}"
    socket = embedded.ensure_running(url)
    other = redis.Redis.from_url(socket)
    try:
        other.ping()
        assert embedded.started_here(url)
        assert embedded.release(url) is True, "stopped under another client"
        assert embedded.running(url)
        assert "1 client(s) connected" in meterd(tmp_path, "embedded", "status").stdout
    finally:
        other.close()
        embedded.stop(url)
    assert not embedded.running(url)
