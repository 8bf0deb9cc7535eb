"""The command line drives the same services: schema, catalog, balance, dead letters."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meterd import runtime as runtime_module
from meterd.cli import EXIT_REFUSED, EXIT_UNAVAILABLE, app, main
from meterd.config import get_settings
from meterd.core.timeutil import utcnow
from meterd.services.balance import BalanceError
from meterd.testing import event

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_creates_an_entitlement_and_reads_its_balance(cli_env: None) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    invoke("feature", "create", "--org", "acme", "api_calls", "--units", "calls")
    out = invoke("entitlement", "create", "--org", "acme", "c-1", "api_calls", "--quantity", "10")
    assert "created (ACTIVE)" in out
    runtime_module.get_runtime().ingest.ingest(
        [event(customer="c-1", quantity="2.5")], now=utcnow()
    )
    (row,) = json.loads(invoke("balance", "--org", "acme", "c-1", "api_calls", "--json"))
    assert (row["consumed"], row["remaining"], row["pending"]) == ("2.5", "7.5", "2.5")
    invoke("flush")
    (row,) = json.loads(invoke("balance", "--org", "acme", "c-1", "api_calls", "--json"))
    assert (row["flushed"], row["pending"]) == ("2.5", "0")  # as the API prints them


def test_cli_lists_dead_letters_by_reason(cli_env: None) -> None:
    invoke("db", "upgrade")
    runtime_module.get_runtime().ingest.ingest([{"not": "an event"}], now=utcnow())
    (letter,) = json.loads(invoke("dlq", "list", "--reason", "invalid", "--json"))
    assert letter["payload"] == {"not": "an event"}
    assert "specversion" in letter["detail"]


def test_cli_replays_dead_letters(cli_env: None) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    invoke("feature", "create", "--org", "acme", "api_calls")
    rt = runtime_module.get_runtime()
    rt.ingest.ingest([event(customer="c-9", quantity="3")], now=utcnow())
    # Replay keeps the event's time: the entitlement must cover it.
    starts = (utcnow() - timedelta(hours=1)).isoformat()
    invoke("entitlement", "create", "--org", "acme", "c-9", "api_calls", "--quantity", "10",
           "--starts", starts)  # fmt: skip
    summary = json.loads(invoke("dlq", "replay", "--json"))
    assert summary == {"replayed": 1, "still_dead": 0, "outcomes": {"accepted": 1}}
    (row,) = json.loads(invoke("balance", "--org", "acme", "c-9", "api_calls", "--json"))
    assert row["consumed"] == "3"


def test_cli_suspends_and_resumes_an_entitlement(cli_env: None) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    invoke("feature", "create", "--org", "acme", "api_calls")
    out = invoke("entitlement", "create", "--org", "acme", "c-1", "api_calls", "--quantity", "10")
    ent_id = out.split()[2]
    assert "is SUSPENDED (row_version 2)" in invoke(
        "entitlement", "suspend", "--org", "acme", ent_id, "--reason", "fraud check"
    )
    refused = runner.invoke(
        app, ["entitlement", "resume", "--org", "acme", ent_id, "--version", "1"]
    )
    assert refused.exit_code != 0 and "row_version 2, not 1" in str(refused.exception)
    assert "is ACTIVE (row_version 3)" in invoke(
        "entitlement", "resume", "--org", "acme", ent_id, "--version", "2"
    )


def test_cli_resets_then_voids_an_entitlement(cli_env: None) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    invoke("feature", "create", "--org", "acme", "api_calls")
    out = invoke("entitlement", "create", "--org", "acme", "c-1", "api_calls", "--quantity", "10")
    ent_id = out.split()[2]
    assert "reset (row_version 2)" in invoke(
        "entitlement", "reset", "--org", "acme", ent_id, "--reason", "plan change"
    )
    assert len(json.loads(invoke("entitlement", "periods", "--org", "acme", ent_id, "--json"))) == 2
    assert "is void from" in invoke(
        "entitlement", "void", "--org", "acme", ent_id, "--reason", "refund"
    )


def test_cli_sets_and_removes_an_org_webhook(cli_env: None) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    secret = "whsec_" + "a" * 32  # base64 of 24 bytes
    assert "https://hooks.example/meterd" in invoke(
        "org", "webhook", "--org", "acme", "https://hooks.example/meterd", "--secret", secret
    )
    assert "webhook of acme: none" in invoke("org", "webhook", "--org", "acme")
    assert runner.invoke(app, ["org", "webhook", "--org", "acme", "ftp://x"]).exit_code != 0
    # A secret must be a Standard Webhooks one now; a private target is refused.
    for refused in (["https://hooks.example/", "--secret", "k"], ["http://10.0.0.1/"]):
        assert runner.invoke(app, ["org", "webhook", "--org", "acme", *refused]).exit_code != 0


def test_cli_issues_a_key_that_authenticates_and_revokes_it(cli_env: None) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    out = invoke("keys", "create", "--org", "acme", "--permission", "ENTITLEMENTS:VIEW")
    token = out.strip().splitlines()[-1]
    keys = runtime_module.get_runtime().api_keys
    principal = keys.authenticate(token)
    assert principal is not None and principal.org == "acme"
    key_id = token.split("_")[1]
    assert "revoked" in invoke("keys", "revoke", "--org", "acme", key_id)
    keys._cache.clear()
    assert keys.authenticate(token) is None


def test_cli_refuses_an_unknown_permission(cli_env: None) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    result = runner.invoke(app, ["keys", "create", "--org", "acme", "--permission", "ROOT"])
    assert result.exit_code != 0


def test_cli_filters_dead_letters_by_time_and_shows_one(cli_env: None) -> None:
    from datetime import timedelta

    invoke("db", "upgrade")
    rt = runtime_module.get_runtime()
    earlier = utcnow() - timedelta(days=2)
    rt.ingest.ingest([{"old": 1}], now=earlier)
    rt.ingest.ingest([{"new": 1}], now=utcnow())
    cutoff = (utcnow() - timedelta(days=1)).isoformat()
    (recent,) = json.loads(invoke("dlq", "list", "--since", cutoff, "--json"))
    (old,) = json.loads(invoke("dlq", "list", "--until", cutoff, "--json"))
    assert (recent["payload"], old["payload"]) == ({"new": 1}, {"old": 1})
    shown = json.loads(invoke("dlq", "show", old["id"]))
    assert shown["payload"] == {"old": 1} and shown["replayed_at"] is None


def test_cli_purges_only_replayed_letters_unless_told_and_asks_first(cli_env: None) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    invoke("feature", "create", "--org", "acme", "api_calls")
    rt = runtime_module.get_runtime()
    rt.ingest.ingest([event(customer="c-9", quantity="3"), {"junk": True}], now=utcnow())
    starts = (utcnow() - timedelta(hours=1)).isoformat()
    invoke("entitlement", "create", "--org", "acme", "c-9", "api_calls", "--quantity", "10",
           "--starts", starts)  # fmt: skip
    invoke("dlq", "replay")  # the no_entitlement letter is settled; the junk stays
    asked = runner.invoke(app, ["dlq", "purge"])
    assert asked.exit_code == 1 and "1 dead letter(s) match" in asked.output
    assert "purged 1" in invoke("dlq", "purge", "--yes")
    assert rt.dead_letters.count() == 1  # the junk, never replayed, is kept
    assert "purged 1" in invoke("dlq", "purge", "--include-unreplayed", "--yes")


def test_the_status_view_shows_every_number_and_the_errors() -> None:
    from rich.console import Console

    from meterd.cli.status_view import status_view as _status_view
    from meterd.ops import QueueDepth, Status

    status = Status(
        queues=[QueueDepth("meterd.ingest", 12, 3), QueueDepth("meterd.flush", None, None)],
        flush_lag_seconds=4.25,
        dead_letters={"invalid": 2},
        events_total={"accepted": 1500},
        events_per_second=250.0,
        workers=["w1@host"],
        errors=["queues: ConnectionError: down"],
    )
    console = Console(record=True, width=120)
    console.print(_status_view(status))
    text = console.export_text()
    for expected in ("meterd.ingest", "12", "4.2 s", "250", "w1@host", "dead letters invalid",
                     "events accepted", "1,500", "ConnectionError", "?"):  # fmt: skip
        assert expected in text, expected


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Exit status of ``meterd <args>`` through ``main`` (which maps errors by kind)."""
    monkeypatch.setattr("sys.argv", ["meterd", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    return int(stopped.value.code or 0)


def test_a_refused_command_exits_2_with_the_reason(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    assert (
        run_main(monkeypatch, "entitlement", "create", "--org", "acme", "c-1", "nope")
        == EXIT_REFUSED
    )
    assert "feature" in capsys.readouterr().out


def test_a_store_that_does_not_answer_exits_75_to_say_try_again(
    cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke("db", "upgrade")

    def down(*_: object, **__: object) -> None:
        raise BalanceError("flushes kept racing the read")

    monkeypatch.setattr(runtime_module.get_runtime().balance, "balances", down)
    assert run_main(monkeypatch, "balance", "--org", "acme", "c-1", "api_calls") == EXIT_UNAVAILABLE


def use_database(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Point the CLI at another database (as METERD_DATABASE_URL would)."""
    monkeypatch.setenv("METERD_DATABASE_URL", url)
    get_settings.cache_clear()
    runtime_module.reset_runtime()


NO_DATABASE = "postgresql://nobody@127.0.0.1:1/none"


@pytest.mark.parametrize(
    "command",
    [
        ("org", "create", "acme"),
        ("feature", "create", "--org", "acme", "api_calls"),
        ("balance", "--org", "acme", "c-1", "api_calls"),
        ("dlq", "list"),
        ("db", "upgrade"),
    ],
    ids=" ".join,
)
def test_a_database_that_does_not_answer_exits_75_with_one_line(
    cli_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: tuple[str, ...],
) -> None:
    use_database(monkeypatch, NO_DATABASE)
    assert run_main(monkeypatch, *command) == EXIT_UNAVAILABLE
    out = capsys.readouterr().out
    assert out.startswith("error: the database did not answer: ") and "Connection refused" in out
    assert out.count("\n") == 1, out


def test_redis_that_does_not_answer_exits_75_with_one_line(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import redis

    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    invoke("feature", "create", "--org", "acme", "api_calls")
    invoke("entitlement", "create", "--org", "acme", "c-1", "api_calls", "--quantity", "10")
    monkeypatch.setattr(
        runtime_module, "redis_client_for", lambda _s: redis.Redis.from_url("redis://127.0.0.1:1")
    )
    runtime_module.reset_runtime()
    assert run_main(monkeypatch, "balance", "--org", "acme", "c-1", "api_calls") == EXIT_UNAVAILABLE
    out = capsys.readouterr().out
    assert out.startswith("error: Redis did not answer: ") and out.count("\n") == 1, out


def test_an_error_message_longer_than_the_terminal_stays_on_one_line(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    feature = "f" * 64
    assert (
        run_main(monkeypatch, "entitlement", "create", "--org", "acme", "c-1", feature)
        == EXIT_REFUSED
    )
    out = capsys.readouterr().out
    assert len(out) > 90 and out.count("\n") == 1 and feature in out, out


def test_an_error_message_is_printed_as_text_not_as_markup(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    assert (
        run_main(monkeypatch, "entitlement", "create", "--org", "acme", "c-1", "[red]x")
        == EXIT_REFUSED
    )
    assert "'[red]x'" in capsys.readouterr().out


def catalog_with_a_feature() -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    invoke("feature", "create", "--org", "acme", "api_calls")


@pytest.mark.parametrize("quantity", ["abc", "NaN", "1e400", "0.0000001", "-1", "1,5", " 1", ""])
def test_entitlement_create_refuses_a_quantity_outside_the_api_grammar_in_one_line(
    cli_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    quantity: str,
) -> None:
    catalog_with_a_feature()
    capsys.readouterr()
    command = ("entitlement", "create", "--org", "acme", "c-1", "api_calls", "--quantity", quantity)
    assert run_main(monkeypatch, *command) == EXIT_REFUSED
    out = capsys.readouterr().out
    assert out.startswith(f"error: quantity {quantity!r} is not a decimal like 10 or 0.5"), out
    assert out.count("\n") == 1, out
    assert json.loads(invoke("balance", "--org", "acme", "c-1", "api_calls", "--json")) == []


def test_entitlement_create_refuses_a_quantity_too_large_to_count_exactly(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog_with_a_feature()
    capsys.readouterr()
    command = ("entitlement", "create", "--org", "acme", "c-1", "api_calls", "--quantity", "9" * 30)
    assert run_main(monkeypatch, *command) == EXIT_REFUSED
    assert "is too large to count exactly" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("quantity", "stored"), [("10", "10"), ("0.000001", "0.000001"), ("0", "0")]
)
def test_entitlement_create_takes_a_quantity_in_the_api_grammar(
    cli_env: None, quantity: str, stored: str
) -> None:
    catalog_with_a_feature()
    invoke("entitlement", "create", "--org", "acme", "c-1", "api_calls", "--quantity", quantity)
    (row,) = json.loads(invoke("balance", "--org", "acme", "c-1", "api_calls", "--json"))
    assert row["quantity"] == stored


def test_publish_of_a_missing_file_exits_2_with_one_line(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "publish", "/nonexistent.json") == EXIT_REFUSED
    assert capsys.readouterr().out == "error: events file /nonexistent.json not found\n"


def test_publish_of_a_file_that_is_not_json_exits_2_with_one_line(
    cli_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "events.json"
    path.write_text("specversion: 1.0\n")
    assert run_main(monkeypatch, "publish", str(path)) == EXIT_REFUSED
    out = capsys.readouterr().out
    assert out.startswith(f"error: {path} is not JSON: Expecting value") and out.count("\n") == 1


def test_publish_of_a_file_that_is_not_text_exits_2_with_one_line(
    cli_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "events.bin"
    path.write_bytes(b"\xff\xfe\x00binary")
    assert run_main(monkeypatch, "publish", str(path)) == EXIT_REFUSED
    out = capsys.readouterr().out
    assert out.startswith(f"error: {path} is not JSON: ") and out.count("\n") == 1


def test_publish_of_a_path_that_cannot_be_read_exits_2_with_one_line(
    cli_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_main(monkeypatch, "publish", str(tmp_path)) == EXIT_REFUSED
    assert capsys.readouterr().out == f"error: cannot read {tmp_path}: Is a directory\n"


def publish_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, payload: object
) -> list[dict[str, object]]:
    """Run ``meterd publish`` on ``payload`` as a file; returns what it handed the broker."""
    sent: list[dict[str, object]] = []

    def fake_publish(_app: object, events: list[dict[str, object]], _size: int) -> int:
        sent.extend(events)
        return 1

    monkeypatch.setattr("meterd.producer.publish_batches", fake_publish)
    path = tmp_path / "events.json"
    path.write_text(json.dumps(payload))
    invoke("publish", str(path))
    return sent


def test_publish_stamps_the_receive_time_on_each_event_without_one(
    cli_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import datetime

    untimed = event(customer="c-1", quantity="1", event_id="e-1")
    assert "time" not in untimed
    null_time = {**event(customer="c-1", quantity="1", event_id="e-2"), "time": None}
    before = utcnow()
    sent = publish_file(monkeypatch, tmp_path, [untimed, null_time])
    after = utcnow()
    stamps = [str(e["time"]) for e in sent]
    assert all(s.endswith("Z") for s in stamps), stamps  # RFC 3339, UTC
    times = [datetime.fromisoformat(s) for s in stamps]
    assert all(before <= t <= after for t in times) and times[0] == times[1]


def test_publish_keeps_the_time_an_event_carries(
    cli_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timed = {**event(customer="c-1", quantity="1"), "time": "2026-11-22T10:00:00+01:00"}
    (sent,) = publish_file(monkeypatch, tmp_path, timed)
    assert sent == timed


def test_publish_with_the_broker_down_exits_75_with_one_line(
    cli_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("METERD_BROKER_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    path = tmp_path / "events.json"
    path.write_text(json.dumps([event(customer="c-1", quantity="1")]))
    assert run_main(monkeypatch, "publish", str(path)) == EXIT_UNAVAILABLE
    out = capsys.readouterr().out
    assert out.startswith("error: the broker did not answer: ") and out.count("\n") == 1, out


@pytest.fixture
def backend_cli(runtime: runtime_module.Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI over the test backend's runtime (SQLite, or PostgreSQL with
    METERD_TEST_BACKEND=real), which has org acme and feature api_calls."""
    monkeypatch.setattr("meterd.cli.context.get_runtime", lambda: runtime)


def test_feature_create_in_an_org_that_does_not_exist_says_so(
    backend_cli: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "feature", "create", "--org", "noorg", "x") == EXIT_REFUSED
    assert capsys.readouterr().out == "error: organisation noorg not found\n"


def test_feature_create_with_a_key_taken_in_the_org_says_it_exists(
    backend_cli: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "feature", "create", "--org", "acme", "api_calls") == EXIT_REFUSED
    assert capsys.readouterr().out == "error: feature 'api_calls' exists in org acme\n"


def days_ago(days: int) -> datetime:
    """Midnight (UTC) ``days`` days before today: usage older than the late window
    (35 days) is refused, so usage read back is dated relative to today."""
    return utcnow().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)


def at(day: datetime, clock: str) -> str:
    """``day`` at ``clock`` (HH:MM) UTC, as the CLI and the events write it."""
    return f"{day:%Y-%m-%d}T{clock}Z"


def counted_usage(*events: tuple[str, str]) -> None:
    """Count (time, quantity) events for c-1 and flush them into the event log."""
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    invoke("feature", "create", "--org", "acme", "api_calls")
    invoke(
        "entitlement",
        "create",
        "--org",
        "acme",
        "c-1",
        "api_calls",
        "--starts",
        "2026-01-01T00:00Z",
    )
    rt = runtime_module.get_runtime()
    batch = [
        event(customer="c-1", quantity=q, event_id=f"u{n}", time=datetime.fromisoformat(t))
        for n, (t, q) in enumerate(events)
    ]
    rt.ingest.ingest(batch, now=utcnow())
    invoke("flush")


def test_usage_draws_a_bar_per_window_with_the_exact_quantity(cli_env: None) -> None:
    first, second, third = days_ago(2), days_ago(1), days_ago(0)
    counted_usage(
        (at(first, "10:00"), "2.5"), (at(first, "11:00"), "1"), (at(second, "09:00"), "5")
    )
    out = invoke(
        "usage", "--org", "acme", "c-1", "--from", at(first, "00:00"), "--to", at(third, "00:00")
    )
    first_line, second_line = out.strip().splitlines()
    assert first_line.startswith(f"{first:%Y-%m-%d}") and "3.5" in first_line
    assert "2 events" in first_line
    assert second_line.startswith(f"{second:%Y-%m-%d}") and "5" in second_line
    assert "█" * 40 in second_line


def test_usage_as_csv_has_one_row_per_window_in_the_time_zone(cli_env: None) -> None:
    first, second, third = days_ago(2), days_ago(1), days_ago(0)
    counted_usage((at(first, "23:30"), "1"), (at(second, "00:30"), "2"))
    out = invoke(
        "usage", "--org", "acme", "--from", at(first, "00:00"), "--to", at(third, "00:00"),
        "--tz", "Asia/Kolkata", "--csv",
    )  # fmt: skip
    header, *rows = out.strip().splitlines()
    assert header.startswith("window_start,window_end")
    assert [r.split(",")[5] for r in rows] == ["3"]  # both on the second day in Kolkata (+05:30)


def test_usage_with_an_unknown_time_zone_exits_2_with_the_reason(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("db", "upgrade")
    assert run_main(monkeypatch, "usage", "--org", "acme", "--tz", "Mars/Olympus") == EXIT_REFUSED
    assert "unknown time zone 'Mars/Olympus'" in capsys.readouterr().out


def test_worker_takes_a_node_name_so_two_workers_on_one_host_differ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr("meterd.cli.serve.become", started.append)
    invoke("worker", "-n", "ingest1@%h", "-Q", "meterd.ingest")
    invoke("worker", "--hostname", "ingest2@%h", "-Q", "meterd.ingest")
    invoke("worker", "-Q", "meterd.ingest")
    first, second, default = started
    assert first[-2:] == ["-n", "ingest1@%h"] and second[-2:] == ["-n", "ingest2@%h"]
    assert "-n" not in default
