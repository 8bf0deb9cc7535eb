"""The README's first command: `meterd demo` on the embedded default, no servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ONCE_IN_DEFAULT

pytestmark = [pytest.mark.e2e, ONCE_IN_DEFAULT]


def test_demo_counts_exactly_on_sqlite_and_the_bundled_redis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERD_")}
    meterd = shutil.which("meterd") or f"{Path(sys.executable).parent}/meterd"
    result = subprocess.run(
        [meterd, "demo", "--customers", "3", "--events", "600", "--batch-size", "100"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "exact" in result.stdout
    assert (tmp_path / "meterd.db").exists()
    assert (tmp_path / ".meterd" / "appendonly.aof").exists() or any(
        (tmp_path / ".meterd").glob("appendonly*")
    ), "the embedded Redis runs with AOF"
    # The demo stops the embedded Redis it started.
    assert (
        not (tmp_path / ".meterd" / "redis.pid").exists()
        or subprocess.run(
            ["pgrep", "-f", str(tmp_path / ".meterd" / "redis.sock")], capture_output=True
        ).returncode
        != 0
    )
