"""A newcomer's first hour with the command line (issue 20, item 9): a bad setting is
one line, never a traceback; no password is printed; a command run where there is no
database says where it looked; `meterd dev` keeps one key. The parts that need real
processes (the embedded Redis's owner, ports, `meterd dev` restarts) are in
tests/e2e/test_first_hour_processes.py."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from rich.console import Console

from meterd import runtime as runtime_module
from meterd.cli import EXIT_REFUSED, main
from meterd.config import Settings, get_settings
from meterd.logs import configure_logging, get_logger
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission

from .conftest import NOW

PASSWORD = "s3cret-Pa55"


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Exit status of ``meterd <args>`` through ``main``, as the shell runs it."""
    monkeypatch.setattr("sys.argv", ["meterd", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    return int(stopped.value.code or 0)


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings read again from this test's environment, and no runtime left over;
    no ``METERD_`` variable of the machine leaks in."""
    for name in list(os.environ):
        if name.startswith("METERD_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr("meterd.cli.serve.become", lambda argv: None)  # never exec celery
    get_settings.cache_clear()
    runtime_module.reset_runtime()
    yield
    runtime_module.reset_runtime()
    get_settings.cache_clear()


def one_error_line(out: str) -> str:
    assert out.count("\n") == 1, out
    assert "Traceback" not in out and "│" not in out, out
    assert out.startswith("error: "), out
    return out


# -- a bad setting: one line, exit 2, on every command --------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ("status",),
        ("worker",),
        ("beat",),
        ("api",),
        ("dev",),
        ("demo",),
        ("db", "upgrade"),
        ("balance", "--org", "acme", "c-1", "api_calls"),
        ("embedded", "status"),
        ("keys", "list", "--org", "acme"),
    ],
    ids=" ".join,
)
def test_a_bad_number_is_one_line_naming_the_setting_the_value_and_what_is_expected(
    fresh_settings: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: tuple[str, ...],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METERD_FLUSH_INTERVAL", "abc")
    assert run_main(monkeypatch, *command) == EXIT_REFUSED
    out = one_error_line(capsys.readouterr().out)
    assert out.startswith("error: METERD_FLUSH_INTERVAL='abc' is not valid: it should be"), out
    assert "number" in out
    assert list(tmp_path.iterdir()) == [], "a command refused for its settings starts nothing"


def test_a_redis_url_with_an_unknown_scheme_is_refused_naming_the_schemes_it_takes(
    fresh_settings: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METERD_REDIS_URL", "foo://x")
    assert run_main(monkeypatch, "status") == EXIT_REFUSED
    out = one_error_line(capsys.readouterr().out)
    assert out.startswith("error: METERD_REDIS_URL='foo://x' is not valid: it should start with")
    for scheme in ("redis://", "rediss://", "unix://", "embedded://"):
        assert scheme in out


def test_every_bad_setting_gets_its_own_line(
    fresh_settings: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METERD_LOG_FORMAT", "xml")
    monkeypatch.setenv("METERD_BATCH_SIZE", "0")
    assert run_main(monkeypatch, "flush") == EXIT_REFUSED
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split("=")[0] for line in lines) == [
        "error: METERD_BATCH_SIZE",
        "error: METERD_LOG_FORMAT",
    ]
    assert "it should be 'console' or 'json'" in " ".join(lines)


def settings(**values: str) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_url_settings_take_the_schemes_meterd_can_use_and_refuse_the_others() -> None:
    for url in ("redis://h:6379/0", "rediss://:pw@h:6380/1", "unix:///run/redis.sock",
                "embedded://.meterd", "embedded:///srv/meterd/.meterd"):  # fmt: skip
        assert settings(redis_url=url).redis_url == url
    for url in ("redis://h/0", "redis+socket:///x/redis.sock", "sentinel://h:26379",
                "amqp://guest:guest@h:5672//", "amqps://h//", "pyamqp://h//"):  # fmt: skip
        assert settings(broker_url=url).broker_url == url
    for url in ("sqlite:///meterd.db", "sqlite:////abs/meterd.db",
                "postgresql://u:p@h:5432/db", "postgresql+psycopg://u@h/db"):  # fmt: skip
        assert settings(database_url=url).database_url == url
    refused = [
        {"redis_url": "foo://x"},
        {"redis_url": "http://h:6379"},
        {"redis_url": "h:6379"},
        {"redis_url": "redis://h:abc/0"},
        {"redis_url": "redis://h:6379/zero"},
        {"broker_url": "http://h"},
        {"broker_url": "amqp://h:99999//"},
        {"database_url": "mysql://u@h/db"},
        {"database_url": "postgres://u@h/db"},
        {"database_url": "meterd.db"},
        {"database_url": "postgresql://u:p@h:port/db"},
    ]
    for values in refused:
        with pytest.raises(ValidationError):
            settings(**values)


def test_a_bad_url_is_shown_with_its_password_masked(
    fresh_settings: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METERD_DATABASE_URL", f"mysql://meterd:{PASSWORD}@db/meterd")
    assert run_main(monkeypatch, "db", "upgrade") == EXIT_REFUSED
    out = one_error_line(capsys.readouterr().out)
    assert PASSWORD not in out
    assert "METERD_DATABASE_URL='mysql://meterd:***@db/meterd' is not valid" in out
    assert "postgresql://" in out and "sqlite:///" in out


# -- no password on screen ----------------------------------------------------------


def test_db_upgrade_prints_the_database_url_with_its_password_masked(
    fresh_settings: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METERD_DATABASE_URL", f"postgresql://meterd:{PASSWORD}@db:5432/meterd")
    monkeypatch.setattr("meterd.storage.migrate.upgrade", lambda url, revision: None)
    assert run_main(monkeypatch, "db", "upgrade") == 0
    out = capsys.readouterr().out
    assert PASSWORD not in out
    assert "database at postgresql://meterd:***@db:5432/meterd is at revision head" in out


def test_demo_prints_its_urls_with_their_passwords_masked(
    fresh_settings: None,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("METERD_DATABASE_URL", f"postgresql://meterd:{PASSWORD}@db:5432/meterd")
    monkeypatch.setenv("METERD_REDIS_URL", f"redis://:{PASSWORD}@redis:6379/0")
    monkeypatch.setattr("meterd.storage.migrate.upgrade", lambda url: None)
    monkeypatch.setattr("meterd.cli.context.get_runtime", lambda: runtime)
    monkeypatch.setattr("meterd.demo.run_demo", lambda rt, plan, console: True)
    assert run_main(monkeypatch, "demo") == 0
    out = capsys.readouterr().out
    assert PASSWORD not in out
    assert "postgresql://meterd:***@db:5432/meterd" in out and "redis://:***@redis:6379/0" in out


def test_the_demos_balance_table_names_the_database_without_its_password(
    runtime: Runtime,
) -> None:
    from meterd.demo import show_balances

    with_password = runtime.settings.model_copy(
        update={"database_url": f"postgresql://meterd:{PASSWORD}@db/meterd"}
    )
    console = Console(record=True, width=200)
    show_balances(dataclasses.replace(runtime, settings=with_password), ["c-1"], console)
    shown = console.export_text()
    assert PASSWORD not in shown and "postgresql://meterd:***@db/meterd" in shown


def test_dev_prints_its_urls_with_their_passwords_masked() -> None:
    from meterd.dev import DevTree, StopSignals, _start_and_wait

    class NothingStarted(DevTree):
        def start(self, name: str, argv: list[str], log: Path) -> None:
            pass  # no child: the banner is printed and dev stops waiting at once

    with_passwords = settings(
        database_url=f"postgresql://meterd:{PASSWORD}@db/meterd",
        redis_url=f"redis://:{PASSWORD}@redis:6379/0",
    )
    console = Console(record=True, width=200)
    _start_and_wait(
        NothingStarted(), with_passwords, "127.0.0.1", 8000, ("mk_x_y", False), console,
        StopSignals(),
    )  # fmt: skip
    shown = console.export_text()
    assert PASSWORD not in shown
    assert "postgresql://meterd:***@db/meterd" in shown and "redis://:***@redis:6379/0" in shown


def test_an_org_webhook_is_shown_without_the_password_in_its_url(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "db", "upgrade") == 0
    assert run_main(monkeypatch, "org", "create", "acme") == 0
    capsys.readouterr()
    url = f"https://meterd:{PASSWORD}@hooks.example/in"
    assert run_main(monkeypatch, "org", "webhook", "--org", "acme", url) == 0
    out = capsys.readouterr().out
    assert PASSWORD not in out and "https://meterd:***@hooks.example/in" in out


def test_an_error_quoting_a_url_masks_its_password(
    fresh_settings: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METERD_REDIS_URL", f"redis://:{PASSWORD}@redis:6379/0")
    assert run_main(monkeypatch, "embedded", "status") == EXIT_REFUSED
    out = one_error_line(capsys.readouterr().out)
    assert PASSWORD not in out and "redis://:***@redis:6379/0" in out


def test_a_url_logged_has_its_password_masked(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    url = f"postgresql://meterd:{PASSWORD}@db/meterd"
    get_logger("meterd.test").warning(f"cannot reach {url}", url=url, detail={"n": 1})
    (line,) = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    assert PASSWORD not in json.dumps(line)
    assert line["url"] == "postgresql://meterd:***@db/meterd"
    assert line["event"] == "cannot reach postgresql://meterd:***@db/meterd"


# -- a command run where there is no database ----------------------------------------


@pytest.fixture
def elsewhere(cli_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory without a database, the current one, on the default relative URL."""
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    monkeypatch.chdir(directory)
    monkeypatch.setenv("METERD_DATABASE_URL", "sqlite:///meterd.db")
    get_settings.cache_clear()
    yield directory


@pytest.mark.parametrize(
    "command",
    [
        ("balance", "--org", "acme", "c-1", "api_calls"),
        ("org", "create", "acme"),
        ("keys", "list", "--org", "acme"),
        ("dlq", "list"),
        ("flush",),
        ("status",),
    ],
    ids=" ".join,
)
def test_a_command_run_where_there_is_no_database_says_where_it_looked_and_creates_none(
    elsewhere: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: tuple[str, ...],
) -> None:
    assert run_main(monkeypatch, *command) == EXIT_REFUSED
    out = one_error_line(capsys.readouterr().out)
    assert f"there is no meterd database at {elsewhere / 'meterd.db'}" in out
    assert "relative to the current directory" in out and "meterd db upgrade" in out
    assert list(elsewhere.iterdir()) == [], "nothing is created where the command ran"


def test_a_command_on_an_empty_database_says_it_holds_no_schema(
    elsewhere: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (elsewhere / "meterd.db").touch()
    assert run_main(monkeypatch, "balance", "--org", "acme", "c-1", "api_calls") == EXIT_REFUSED
    out = one_error_line(capsys.readouterr().out)
    assert f"the database sqlite:///meterd.db ({elsewhere / 'meterd.db'}) is empty" in out
    assert "meterd db upgrade" in out


def test_after_db_upgrade_the_same_command_works(
    elsewhere: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "balance", "--org", "acme", "c-1", "api_calls") == EXIT_REFUSED
    assert run_main(monkeypatch, "db", "upgrade") == 0
    assert run_main(monkeypatch, "org", "create", "acme") == 0
    assert "organisation acme ready" in capsys.readouterr().out


# -- meterd dev keeps one key --------------------------------------------------------


def active_dev_keys(runtime: Runtime) -> list[str]:
    keys = runtime.api_keys.list("dev")
    return [k.id for k in keys if k.name == "meterd dev" and k.status == "active"]


def test_dev_reuses_the_key_it_recorded(runtime: Runtime, tmp_path: Path) -> None:
    from meterd.dev import dev_key

    runtime.catalog.create_org("dev", "meterd dev", NOW)
    key_file = tmp_path / ".meterd" / "dev-key"
    first, reused_first = dev_key(runtime.api_keys, key_file, NOW)
    second, reused_second = dev_key(runtime.api_keys, key_file, NOW)
    assert (reused_first, reused_second) == (False, True)
    assert second == first and key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    principal = runtime.api_keys.authenticate(first)
    assert principal is not None and principal.may(Permission.ALL)
    assert active_dev_keys(runtime) == [principal.key_id]


def test_the_state_directory_holding_the_dev_key_is_ignored_by_git(
    runtime: Runtime, tmp_path: Path
) -> None:
    """``.meterd/`` sits in the user's project and holds a full-access key."""
    from meterd.dev import dev_key

    runtime.catalog.create_org("dev", "meterd dev", NOW)
    dev_key(runtime.api_keys, tmp_path / ".meterd" / "dev-key", NOW)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    ignored = subprocess.run(
        ["git", "-C", str(tmp_path), "check-ignore", "-q", ".meterd/dev-key"], check=False
    )
    assert ignored.returncode == 0


def test_dev_revokes_the_keys_earlier_starts_minted(runtime: Runtime, tmp_path: Path) -> None:
    from meterd.dev import dev_key

    runtime.catalog.create_org("dev", "meterd dev", NOW)
    earlier = [
        runtime.api_keys.create("dev", [Permission.ALL], NOW, name="meterd dev")[0]
        for _ in range(3)
    ]
    other, _ = runtime.api_keys.create("dev", [Permission.ALL], NOW, name="my script")
    token, _ = dev_key(runtime.api_keys, tmp_path / "dev-key", NOW)
    assert token not in earlier
    runtime.api_keys._cache.clear()
    assert [runtime.api_keys.authenticate(t) for t in earlier] == [None, None, None]
    assert runtime.api_keys.authenticate(other) is not None, "a key of another name stays"
    assert len(active_dev_keys(runtime)) == 1


def test_a_recorded_dev_key_revoked_meanwhile_is_replaced(runtime: Runtime, tmp_path: Path) -> None:
    from meterd.dev import dev_key

    runtime.catalog.create_org("dev", "meterd dev", NOW)
    key_file = tmp_path / "dev-key"
    first, _ = dev_key(runtime.api_keys, key_file, NOW)
    runtime.api_keys.revoke(first.split("_")[1], NOW)
    second, reused = dev_key(runtime.api_keys, key_file, NOW)
    assert not reused and second != first and key_file.read_text().strip() == second
    assert len(active_dev_keys(runtime)) == 1


# -- a taken port ---------------------------------------------------------------------


def test_api_on_a_taken_port_says_so_in_one_line(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_main(monkeypatch, "api", "--port", str(port)) == EXIT_REFUSED
    out = one_error_line(capsys.readouterr().out)
    assert f"port {port} on 127.0.0.1 is already in use" in out and "--port" in out
