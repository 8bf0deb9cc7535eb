"""The counter Redis safety check, against real redis-server processes started with
the settings under test: an evicting or non-persistent Redis is refused at every
start path (API, worker, beat) with the setting to change, unless
METERD_UNSAFE_REDIS=1, which starts, warns and shows in metrics, /readyz and status.
Managed Redis that hides CONFIG is read through INFO.

Each server is its own redis-server on a free port (`--save ''`, a temporary
`--dir`), so these tests run the same in both test configurations."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from meterd import embedded
from meterd.api.app import create_app
from meterd.celery_config import celery_command, worker_command
from meterd.config import Settings
from meterd.ops import gather, redis_safety
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.storage.database import Database
from meterd.storage.redis_safety import UnsafeRedisError, check_redis, enforce
from meterd.testing import free_port

from .conftest import NOW, require

EVICTING = ("--maxmemory-policy", "allkeys-lru", "--appendonly", "yes")
NO_AOF = ("--maxmemory-policy", "noeviction", "--appendonly", "no")
SAFE = ("--maxmemory-policy", "noeviction", "--appendonly", "yes", "--appendfsync", "always")


class RedisServer:
    """A redis-server of the test's own on a free port; killed at the end of the test."""

    def __init__(self, directory: Path, args: tuple[str, ...], config: str = "") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            require("redis-server on PATH", FileNotFoundError("redis-server"))
        self.port = free_port()
        command = [str(binary)]
        if config:
            conf = directory / "redis.conf"
            conf.write_text(config)
            command.append(str(conf))
        command += ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--dir", str(directory), *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


StartServer = Callable[..., RedisServer]


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[StartServer]:
    servers: list[RedisServer] = []

    def start(*args: str, config: str = "") -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        servers.append(RedisServer(directory, args, config))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def runtime_on(
    server: RedisServer, database: Database, database_url: str, **settings: Any
) -> Runtime:
    rt = Runtime(
        settings=Settings(
            database_url=database_url,
            redis_url=server.url,
            _env_file=None,  # type: ignore[call-arg]
            **settings,
        ),
        redis=server.client,
        database=database,
    )
    rt.catalog.create_org("acme", "Acme", NOW)
    return rt


class NoBroker:
    """A Celery app stand-in whose broker cannot be reached."""

    def connection_for_read(self) -> Any:
        raise ConnectionError("no broker here")


# -- the check itself -------------------------------------------------------------------------


def test_an_evicting_redis_is_refused_with_the_setting_to_change(start_redis: StartServer) -> None:
    report = check_redis(start_redis(*EVICTING).client)
    assert not report.safe
    with pytest.raises(UnsafeRedisError) as refused:
        enforce(report, allow_unsafe=False)
    message = str(refused.value)
    assert "maxmemory-policy is allkeys-lru" in message
    assert "CONFIG SET maxmemory-policy noeviction" in message
    assert "METERD_UNSAFE_REDIS=1" in message
    assert "appendonly" not in message


def test_a_redis_without_aof_is_refused_with_the_setting_to_change(
    start_redis: StartServer,
) -> None:
    report = check_redis(start_redis(*NO_AOF).client)
    with pytest.raises(UnsafeRedisError) as refused:
        enforce(report, allow_unsafe=False)
    message = str(refused.value)
    assert "appendonly is no: set `appendonly yes`" in message
    assert "maxmemory-policy" not in message


def test_noeviction_with_aof_always_is_safe_without_a_warning(start_redis: StartServer) -> None:
    report = check_redis(start_redis(*SAFE).client)
    assert report.safe
    assert report.warnings == ()
    assert report.source == "CONFIG GET"
    enforce(report, allow_unsafe=False)  # does not raise


def test_aof_with_appendfsync_everysec_is_accepted_with_a_warning(
    start_redis: StartServer,
) -> None:
    server = start_redis("--appendonly", "yes", "--appendfsync", "everysec")
    report = check_redis(server.client)
    assert report.safe
    assert len(report.warnings) == 1
    assert "appendfsync is everysec" in report.warnings[0]
    assert "appendfsync always" in report.warnings[0]


def test_an_unsafe_redis_is_allowed_to_run_with_the_setting(start_redis: StartServer) -> None:
    report = check_redis(start_redis(*EVICTING).client)
    enforce(report, allow_unsafe=True)  # does not raise
    assert [p.setting for p in report.problems] == ["maxmemory-policy"]


# -- managed Redis hiding CONFIG -------------------------------------------------------------------


def test_with_config_renamed_away_an_evicting_redis_is_found_through_info(
    start_redis: StartServer,
) -> None:
    server = start_redis(*EVICTING, config='rename-command CONFIG ""\n')
    with pytest.raises(redis.ResponseError):
        server.client.config_get("maxmemory-policy")
    report = check_redis(server.client)
    assert report.source.startswith("INFO, as CONFIG GET was refused")
    assert [(p.setting, p.found) for p in report.problems] == [("maxmemory-policy", "allkeys-lru")]


def test_with_config_renamed_away_a_safe_redis_passes_through_info(
    start_redis: StartServer,
) -> None:
    server = start_redis(*SAFE, config='rename-command CONFIG ""\n')
    report = check_redis(server.client)
    assert report.safe
    assert report.source.startswith("INFO")
    # INFO does not tell appendfsync: said, not guessed.
    assert report.warnings and "appendfsync could not be read" in report.warnings[0]


def test_with_config_renamed_away_a_redis_without_aof_is_found_through_info(
    start_redis: StartServer,
) -> None:
    server = start_redis(*NO_AOF, config='rename-command CONFIG ""\n')
    report = check_redis(server.client)
    assert [(p.setting, p.found) for p in report.problems] == [("appendonly", "no")]


def test_an_acl_user_without_config_is_read_through_info(start_redis: StartServer) -> None:
    server = start_redis(*EVICTING)
    server.client.acl_setuser(
        "meterd",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-config"],
    )
    limited = redis.Redis(port=server.port, username="meterd", password="secret")
    with pytest.raises(redis.exceptions.NoPermissionError):
        limited.config_get("maxmemory-policy")
    report = check_redis(limited)
    limited.close()
    assert report.source.startswith("INFO")
    assert [p.setting for p in report.problems] == ["maxmemory-policy"]
    assert "secret" not in report.describe()


def test_with_config_and_info_hidden_the_settings_are_unverified_and_refused(
    start_redis: StartServer,
) -> None:
    server = start_redis(*SAFE, config='rename-command CONFIG ""\nrename-command INFO ""\n')
    report = check_redis(server.client)
    assert [(p.setting, p.found.split()[0]) for p in report.problems] == [
        ("maxmemory-policy", "unknown"),
        ("appendonly", "unknown"),
    ]
    with pytest.raises(UnsafeRedisError, match="METERD_REDIS_SAFETY_VERIFIED=1"):
        enforce(report, allow_unsafe=False)


def test_the_operators_word_covers_unreadable_settings_with_a_warning(
    start_redis: StartServer,
) -> None:
    server = start_redis(*SAFE, config='rename-command CONFIG ""\nrename-command INFO ""\n')
    report = check_redis(server.client, operator_verified=True)
    assert report.safe
    assert any("on the operator's word" in w for w in report.warnings)


def test_the_operators_word_never_excuses_a_setting_read_wrong(start_redis: StartServer) -> None:
    server = start_redis(*EVICTING, config='rename-command CONFIG ""\n')
    report = check_redis(server.client, operator_verified=True)
    assert [p.setting for p in report.problems] == ["maxmemory-policy"]


# -- the servers meterd accepts by design ----------------------------------------------------------


def test_fakeredis_is_accepted_as_a_test_double() -> None:
    report = check_redis(fakeredis.FakeRedis())
    assert report.safe
    assert report.source.startswith("fakeredis")


def test_the_embedded_server_meterd_starts_is_safe(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path / 'e'}"
    client = redis.Redis.from_url(embedded.ensure_running(url))
    try:
        report = check_redis(client)
        assert report.safe, report.describe()
        assert report.warnings == ()  # AOF with appendfsync always, noeviction
    finally:
        client.close()
        embedded.stop(url)


# -- the API -----------------------------------------------------------------------------------


def test_the_api_does_not_start_on_an_evicting_redis(
    start_redis: StartServer, database: Database, database_url: str
) -> None:
    rt = runtime_on(start_redis(*EVICTING), database, database_url)
    app = create_app(lambda: rt, publish_events=lambda _events: None, celery_app=NoBroker)
    with pytest.raises(UnsafeRedisError, match="maxmemory-policy is allkeys-lru"), TestClient(app):
        pass


def test_the_api_process_exits_on_a_redis_without_aof(
    start_redis: StartServer, database_url: str, tmp_path: Path
) -> None:
    server = start_redis(*NO_AOF)
    env = {"METERD_DATABASE_URL": database_url, "METERD_REDIS_URL": server.url}
    port = free_port()
    command = [sys.executable, "-m", "meterd.cli", "api", "--port", str(port)]
    done = subprocess.run(
        command, env=_env(env), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr  # refused, in one line
    assert "appendonly is no: set `appendonly yes`" in done.stdout + done.stderr


def test_with_unsafe_redis_allowed_the_api_starts_warns_and_metrics_show_it(
    start_redis: StartServer,
    database: Database,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rt = runtime_on(start_redis(*EVICTING), database, database_url, unsafe_redis=True)
    token, _ = rt.api_keys.create("acme", [Permission.METRICS_VIEW], NOW)
    app = create_app(lambda: rt, publish_events=lambda _events: None, celery_app=NoBroker)
    with TestClient(app) as client:
        assert "COUNTING ON AN UNSAFE REDIS" in "".join(capsys.readouterr())
        text = client.get("/metrics", headers={"x-api-key": token}).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("meterd_redis_unsafe", ())] == 1
    key = (("found", "allkeys-lru"), ("setting", "maxmemory-policy"))
    assert samples[("meterd_redis_unsafe_setting", key)] == 1


def test_metrics_show_0_for_a_safe_redis(
    start_redis: StartServer, database: Database, database_url: str
) -> None:
    rt = runtime_on(start_redis(*SAFE), database, database_url)
    token, _ = rt.api_keys.create("acme", [Permission.METRICS_VIEW], NOW)
    app = create_app(lambda: rt, publish_events=lambda _events: None, celery_app=NoBroker)
    with TestClient(app) as client:
        text = client.get("/metrics", headers={"x-api-key": token}).text
    assert "\nmeterd_redis_unsafe 0.0\n" in text
    assert "meterd_redis_unsafe_setting{" not in text


def test_readyz_is_503_and_names_the_problem_when_redis_becomes_unsafe(
    start_redis: StartServer, database: Database, database_url: str
) -> None:
    server = start_redis(*SAFE)
    rt = runtime_on(server, database, database_url)
    app = create_app(lambda: rt, publish_events=lambda _events: None, celery_app=NoBroker)
    with TestClient(app) as client:
        assert client.get("/readyz").json()["redis_safety"]["state"] == "safe"
        server.client.config_set("maxmemory-policy", "volatile-lru")
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"] == {"database": "ok", "redis": "ok"}
    assert body["redis_safety"]["state"] == "unsafe"
    [problem] = body["redis_safety"]["problems"]
    assert (problem["setting"], problem["found"]) == ("maxmemory-policy", "volatile-lru")
    assert "maxmemory-policy noeviction" in problem["fix"]


def test_readyz_with_unsafe_redis_allowed_is_ready_and_lists_the_problem(
    start_redis: StartServer, database: Database, database_url: str
) -> None:
    rt = runtime_on(start_redis(*NO_AOF), database, database_url, unsafe_redis=True)
    app = create_app(lambda: rt, publish_events=lambda _events: None, celery_app=NoBroker)
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    safety = response.json()["redis_safety"]
    assert safety["state"] == "unsafe_allowed"
    assert [p["setting"] for p in safety["problems"]] == ["appendonly"]


# -- meterd status ------------------------------------------------------------------------------


def test_status_shows_an_unsafe_redis_with_the_setting_to_change(
    start_redis: StartServer, database: Database, database_url: str
) -> None:
    from meterd.cli.status_view import status_view as _status_view

    rt = runtime_on(start_redis(*EVICTING), database, database_url, unsafe_redis=True)
    status = gather(rt, NoBroker(), ping_timeout=0.1)  # type: ignore[arg-type]
    assert status.as_json()["redis_safety"]["state"] == "unsafe_allowed"
    out = io.StringIO()
    Console(file=out, width=400).print(_status_view(status))
    assert "unsafe_allowed" in out.getvalue()
    assert "maxmemory-policy is allkeys-lru: set `maxmemory-policy noeviction`" in out.getvalue()


def test_a_redis_that_does_not_answer_has_an_unknown_safety(
    database: Database, database_url: str
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    rt = Runtime(
        settings=Settings(database_url=database_url, redis_url=closed, _env_file=None),  # type: ignore[call-arg]
        redis=redis.Redis.from_url(closed, socket_timeout=1),
        database=database,
    )
    state = redis_safety(rt)
    assert state.state == "unknown"
    assert "did not answer" in state.warnings[0]


# -- worker and beat ----------------------------------------------------------------------------


def _env(values: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERD_")}
    return {**env, **values}


@pytest.mark.parametrize(
    ("process", "argv"),
    [
        ("worker", worker_command(concurrency=1)),
        ("beat", celery_command("beat", "-l", "warning")),
    ],
)
def test_a_worker_or_beat_process_exits_78_on_an_evicting_redis(
    start_redis: StartServer, database_url: str, tmp_path: Path, process: str, argv: list[str]
) -> None:
    server = start_redis(*EVICTING)
    env = {
        "METERD_DATABASE_URL": database_url,
        "METERD_REDIS_URL": server.url,
        "METERD_BROKER_URL": f"redis://127.0.0.1:{server.port}/1",
    }
    log = tmp_path / f"{process}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, env=_env(env), cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # a worker that did start goes with its pool children
        )  # fmt: skip
    try:
        returncode = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text()
    assert returncode == 78, output
    assert f"{process} not started" in output
    assert "maxmemory-policy is allkeys-lru" in output


def test_the_worker_start_hook_runs_on_an_unsafe_redis_when_allowed(
    start_redis: StartServer,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from meterd import worker

    server = start_redis(*NO_AOF)
    settings = Settings(
        database_url=database_url,
        redis_url=server.url,
        unsafe_redis=True,
        _env_file=None,  # type: ignore[call-arg]
    )
    monkeypatch.setattr(worker, "get_settings", lambda: settings)
    worker._refuse_unsafe_redis("w@host")  # does not exit
    assert "COUNTING ON AN UNSAFE REDIS" in "".join(capsys.readouterr())


def test_the_worker_start_hook_exits_75_when_redis_never_answers(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meterd import worker

    settings = Settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        _env_file=None,  # type: ignore[call-arg]
    )
    monkeypatch.setattr(worker, "get_settings", lambda: settings)
    monkeypatch.setattr(worker, "REDIS_START_WAIT_SECONDS", 0.0)
    with pytest.raises(SystemExit) as exited:
        worker._refuse_unsafe_redis("w@host")
    assert exited.value.code == 75
