"""`meterd dev` from a subprocess: it starts, answers, counts, and flushes on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from meterd.testing import answers, event, free_port, wait_until
from meterd.timeutil import utcnow

pytestmark = pytest.mark.e2e


def test_meterd_dev_serves_counts_and_flushes_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("METERD_")
    }  # the embedded default, in a fresh directory
    proc = subprocess.Popen(
        [sys.executable, "-m", "meterd.cli", "dev", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
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
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "flushed" in out
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'meterd.db'}")
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT SUM(consumed) FROM usage_periods")).scalar()
    assert int(total) == 10_000_000  # micro-units on SQLite: everything reached the database
    time.sleep(0.1)
