"""A newcomer's first hour with real processes (issue 20, item 9): `meterd demo` beside
`meterd dev` leaves dev's embedded Redis running; `meterd api` stopped by a signal stops
the Redis it started; a Redis whose starter is gone is stopped by the next command done
with it; `meterd dev` on a taken port says so before anything starts; `meterd dev`
restarted shows the same key. Each runs the `meterd` command in a fresh directory on the
embedded default, as the README has a newcomer do."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from meterd import embedded
from meterd.storage.migrate import upgrade
from meterd.testing import answers, free_port, wait_until

from .conftest import ONCE_IN_DEFAULT
from .test_dev import processes_in

pytestmark = [pytest.mark.e2e, ONCE_IN_DEFAULT]

METERD = shutil.which("meterd") or f"{Path(sys.executable).parent}/meterd"


def newcomer_env() -> dict[str, str]:
    """The environment without any ``METERD_`` setting: the embedded default."""
    return {key: value for key, value in os.environ.items() if not key.startswith("METERD_")}


def meterd(cwd: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [METERD, *args], cwd=cwd, env=newcomer_env(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def embedded_url(directory: Path) -> str:
    return f"embedded://{directory / '.meterd'}"


@dataclass
class Dev:
    proc: subprocess.Popen[str]
    base: str
    key: str
    lines: list[str]

    def stop(self, sig: signal.Signals = signal.SIGINT) -> str:
        """Ask dev to stop; its whole output once it has."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=180)
        return "".join(self.lines) + out


@contextmanager
def running_dev(directory: Path) -> Iterator[Dev]:
    """`meterd dev` in ``directory``, once it has printed its key and its API answers;
    stopped with Ctrl-C (SIGINT) on the way out."""
    port = free_port()
    proc = subprocess.Popen(
        [METERD, "dev", "--port", str(port)], cwd=directory, env=newcomer_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    dev = Dev(proc, f"http://127.0.0.1:{port}", "", [])
    try:
        assert proc.stdout is not None
        while not dev.key:
            line = proc.stdout.readline()
            assert line, "meterd dev exited early:\n" + "".join(dev.lines)
            dev.lines.append(line)
            if line.strip().startswith("mk_"):
                dev.key = line.strip()
        wait_until(lambda: answers(dev.base + "/readyz"), 90, "the dev API to be ready")
        yield dev
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=180)


def test_demo_beside_dev_leaves_devs_redis_running_and_dev_answering(tmp_path: Path) -> None:
    with running_dev(tmp_path) as dev:
        demo = meterd(tmp_path, "demo", "--customers", "2", "--events", "200",
                      "--batch-size", "100")  # fmt: skip
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert "exact" in demo.stdout
        assert dev.proc.poll() is None, "meterd dev is still running"
        assert embedded.running(embedded_url(tmp_path)), "dev's Redis survived the demo"
        ready = httpx.get(dev.base + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        value = httpx.get(
            dev.base + "/v1/customers/c-1/features/api_calls",
            headers={"x-api-key": dev.key},
            timeout=10,
        )
        assert value.status_code == 200, value.text
        out = dev.stop()
    assert dev.proc.returncode == 0, out
    assert not embedded.running(embedded_url(tmp_path)), "dev stopped the Redis it started"
    assert processes_in(tmp_path) == {}


def test_a_redis_whose_starter_is_gone_is_stopped_by_the_next_command_done_with_it(
    tmp_path: Path,
) -> None:
    upgrade(f"sqlite:///{tmp_path / 'meterd.db'}")  # as `meterd db upgrade` there
    url = embedded_url(tmp_path)
    start_and_vanish = f"from meterd import embedded; embedded.ensure_running({url!r})"
    subprocess.run([sys.executable, "-c", start_and_vanish], check=True, timeout=60)
    try:
        assert embedded.running(url), "the starter ended without stopping it"
        assert "which is gone" in meterd(tmp_path, "embedded", "status").stdout
        status = meterd(tmp_path, "status", "--sample", "0")
        assert status.returncode == 0, status.stdout + status.stderr
        assert not embedded.running(url), "the orphan was stopped"
    finally:
        embedded.stop(url)


def stop_api_with(directory: Path, sig: signal.Signals) -> None:
    """Start `meterd api` in ``directory``, stop it with ``sig`` once it answers, and check
    that it stopped cleanly and took the embedded Redis it started with it."""
    port = free_port()
    proc = subprocess.Popen(
        [METERD, "api", "--port", str(port)], cwd=directory, env=newcomer_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), 90, "meterd api")
        assert embedded.running(embedded_url(directory)), "the API started the embedded Redis"
    finally:
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"{sig.name}: {out}"
    assert "Traceback" not in out and "Aborted" not in out, out
    assert not embedded.running(embedded_url(directory)), f"{sig.name}: {out}"
    assert processes_in(directory) == {}


def test_api_stopped_by_sigterm_or_ctrl_c_stops_the_embedded_redis_it_started(
    tmp_path: Path,
) -> None:
    upgrade(f"sqlite:///{tmp_path / 'meterd.db'}")  # as `meterd db upgrade` there
    stop_api_with(tmp_path, signal.SIGTERM)
    stop_api_with(tmp_path, signal.SIGINT)


def test_dev_on_a_taken_port_says_so_in_one_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = meterd(tmp_path, "dev", "--port", str(port), timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert out.count("\n") == 1, out
    assert f"error: port {port} on 127.0.0.1 is already in use" in out and "--port" in out
    assert "mk_" not in out, "no key was minted"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing was created or started"


def active_keys_of_dev(directory: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{directory / 'meterd.db'}")
    with engine.connect() as conn:
        count = conn.execute(
            sa.text("SELECT count(*) FROM api_keys WHERE org_id = 'dev' AND revoked_at IS NULL")
        ).scalar_one()
    engine.dispose()
    return int(count)


def test_dev_restarted_shows_the_same_key_and_keeps_one_alive(tmp_path: Path) -> None:
    keys = []
    for _ in range(2):
        with running_dev(tmp_path) as dev:
            keys.append(dev.key)
            out = dev.stop()
        assert dev.proc.returncode == 0, out
    assert keys[0] == keys[1]
    assert "the same as last time" in out
    assert active_keys_of_dev(tmp_path) == 1
