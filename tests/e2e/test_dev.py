"""`meterd dev` from a subprocess: it starts, answers, counts, and on Ctrl-C or SIGTERM
stops its children in order, flushes, and leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from meterd.core.timeutil import utcnow
from meterd.storage.exact import decode_micros
from meterd.testing import answers, event, free_port, wait_until

from .conftest import ONCE_IN_DEFAULT

pytestmark = [pytest.mark.e2e, ONCE_IN_DEFAULT]


def processes_in(directory: Path) -> dict[int, str]:
    """Live processes (pid: command line) whose working directory is ``directory`` or
    below: `meterd dev` and everything it starts (worker and its pool, beat, API, and
    the daemonized redis-server in .meterd/), even once reparented away from it."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # gone meanwhile, or not ours to look at
            continue
        if state != "Z" and (cwd == directory or directory in cwd.parents):
            found[int(entry.name)] = cmdline
    return found


def run_dev_until(sig: signal.Signals, tmp_path: Path) -> tuple[int, str, dict[int, str]]:
    """Start `meterd dev` in ``tmp_path`` on the embedded default, count 4 x 2.5 through
    its API and worker, then send ``sig``. Returns the exit status, the output, and
    the processes that ran in ``tmp_path`` just before the signal. Beat's flush is
    set an hour apart, so only the flush on the way out can move the counts."""
    port = free_port()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("METERD_")
    }  # the embedded default, in a fresh directory
    env["METERD_FLUSH_INTERVAL"] = "3600"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meterd.cli", "dev", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    running: dict[int, str] = {}
    try:
        assert proc.stdout is not None
        lines = []
        while not any(line.strip().startswith("mk_") for line in lines):
            line = proc.stdout.readline()
            assert line, "meterd dev exited early:\n" + "".join(lines)
            lines.append(line)
        key = next(line.strip() for line in lines if line.strip().startswith("mk_"))
        assert any(f"{base}/docs" in line for line in lines)

        wait_until(lambda: answers(base + "/readyz"), 60, "the dev API")
        headers = {"x-api-key": key}
        httpx.post(base + "/v1/features", json={"key": "api_calls"}, headers=headers)
        body = {"customer_id": "c-1", "feature": "api_calls", "quantity": "100"}
        assert httpx.post(base + "/v1/entitlements", json=body, headers=headers).status_code == 201
        events = [event("c-1", "2.5", event_id=f"d{i}", time=utcnow()) for i in range(4)]
        for e in events:
            del e["org"]
        posted = httpx.post(
            base + "/v1/events",
            content=json.dumps(events),
            headers={**headers, "content-type": "application/json"},
        )
        assert posted.status_code == 202
        url = base + "/v1/customers/c-1/features/api_calls"
        wait_until(
            lambda: httpx.get(url, headers=headers).json()["consumed"] == "10", 60, "counting"
        )
        running = processes_in(tmp_path)
    finally:
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    return proc.returncode, out, running


def flushed_micros(tmp_path: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'meterd.db'}")
    with engine.connect() as conn:
        values = conn.execute(sa.text("SELECT consumed FROM usage_periods")).scalars().all()
    engine.dispose()
    return sum(decode_micros(v) for v in values)  # exact BLOBs on SQLite (storage/exact.py)


def assert_stopped_in_order_and_flushed(
    status: int, out: str, running: dict[int, str], tmp_path: Path
) -> None:
    assert status == 0, out
    assert "flushed 1 batch(es)" in out, out
    assert flushed_micros(tmp_path) == 10_000_000  # everything reached the database
    worker_log = (tmp_path / ".meterd" / "dev-worker.log").read_text()
    assert "Warm shutdown" in worker_log  # the worker finished its tasks, not killed
    commands = " | ".join(running.values())
    for child in ("worker", "beat", "meterd.cli api", "redis-server"):
        assert child in commands, f"{child} was not running: {commands}"
    survivors = processes_in(tmp_path)
    assert survivors == {}, f"still running after meterd dev exited: {survivors}"


def test_meterd_dev_serves_counts_and_flushes_on_ctrl_c(tmp_path: Path) -> None:
    status, out, running = run_dev_until(signal.SIGINT, tmp_path)
    assert_stopped_in_order_and_flushed(status, out, running, tmp_path)


def test_meterd_dev_stops_and_flushes_on_sigterm_like_on_ctrl_c(tmp_path: Path) -> None:
    status, out, running = run_dev_until(signal.SIGTERM, tmp_path)
    assert "stopping (SIGTERM)" in out
    assert_stopped_in_order_and_flushed(status, out, running, tmp_path)
