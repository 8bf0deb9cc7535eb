"""The CLI reads an entitlement's periods and transitions as the API answers them,
replays exactly the dead letters it is told to, pages dead letters by the API's
cursors, and narrows a rotated key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd import runtime as runtime_module
from meterd.api.app import create_app
from meterd.cli import app
from meterd.core.timeutil import utcnow
from meterd.services.api_keys import Permission
from meterd.testing import event

from .api.conftest import NoBroker
from .cli_support import invoke, runner
from .cli_support import refused as refused_one_line


def refused(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code != 0, result.output
    return result.output


@pytest.fixture
def acme(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    monkeypatch.setenv("METERD_ORG", "acme")
    invoke("feature", "create", "api_calls")


@pytest.fixture
def api() -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The API over the CLI's runtime, with a key of acme holding every permission."""
    rt = runtime_module.get_runtime()
    token, _ = rt.api_keys.create("acme", [Permission.ALL], utcnow())
    web = create_app(lambda: rt, publish_events=lambda _batch: None, celery_app=NoBroker)
    with TestClient(web) as client:
        yield client, {"x-api-key": token}


def dead_letters(count: int) -> list[str]:
    """``count`` dead letters of acme (usage of no entitlement), oldest first."""
    rt = runtime_module.get_runtime()
    for n in range(count):
        rt.ingest.ingest([event(customer=f"c-{n}", event_id=f"evt-{n}")], now=utcnow())
    return [letter["id"] for letter in json.loads(invoke("dlq", "list", "--json"))]


def test_periods_and_transitions_print_what_the_api_answers(
    acme: None, api: tuple[TestClient, dict[str, str]]
) -> None:
    ent_id = invoke("entitlement", "create", "c-1", "api_calls", "--quantity", "10").split()[2]
    runtime_module.get_runtime().ingest.ingest(
        [event(customer="c-1", quantity="2.5")], now=utcnow()
    )
    invoke("entitlement", "suspend", ent_id[:8], "--reason", "fraud check")
    client, headers = api
    for what in ("periods", "transitions"):
        from_cli: Any = json.loads(invoke("entitlement", what, ent_id[:8], "--json"))
        answer = client.get(f"/v1/entitlements/{ent_id}/{what}", headers=headers)
        assert answer.status_code == 200, answer.text
        assert from_cli == answer.json()
    (period,) = json.loads(invoke("entitlement", "periods", ent_id, "--json"))
    assert (period["quantity"], period["consumed"]) == ("10", "2.5")
    assert "fraud check" in invoke("entitlement", "transitions", ent_id)


def test_dlq_replay_replays_exactly_the_letters_named_by_prefix(acme: None) -> None:
    first, second = dead_letters(2)
    starts = (utcnow() - timedelta(hours=1)).isoformat()
    for customer in ("c-0", "c-1"):
        invoke("entitlement", "create", customer, "api_calls", "--starts", starts)
    summary = json.loads(invoke("dlq", "replay", first[:8], "--json"))
    assert summary == {"replayed": 1, "still_dead": 0, "outcomes": {"accepted": 1}}
    assert [dl["id"] for dl in json.loads(invoke("dlq", "list", "--json"))] == [second]
    again = json.loads(invoke("dlq", "replay", first, "--json"))
    assert again["replayed"] == 0  # already replayed: skipped, as the API skips it


def test_dlq_replay_refuses_an_unknown_letter_and_names_with_filters(
    acme: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (letter,) = dead_letters(1)
    unknown = "ffffffff-ffff-4fff-bfff-ffffffffffff"
    for named in ("ffffffff", unknown):
        assert "dead letter" in refused_one_line(monkeypatch, capsys, "dlq", "replay", named)
    assert "not both" in refused("dlq", "replay", letter, "--reason", "no_entitlement")
    assert len(json.loads(invoke("dlq", "list", "--json"))) == 1


def test_dlq_limits_are_bounded_and_the_cursor_needs_an_org(acme: None) -> None:
    for command in ("list", "replay"):
        refused("dlq", command, "--limit", "0")
    refused("dlq", "list", "--limit", "201")
    assert "--org" in refused("dlq", "list", "--cursor", "abc")


def test_dlq_list_pages_one_org_by_cursor(acme: None) -> None:
    letters = dead_letters(3)
    result = runner.invoke(app, ["dlq", "list", "--org", "acme", "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    first = json.loads(result.stdout)
    assert [dl["id"] for dl in first] == letters[:2]
    cursor = result.stderr.split("--cursor ")[1].strip()
    rest = runner.invoke(app, ["dlq", "list", "--org", "acme", "--cursor", cursor, "--json"])
    assert [dl["id"] for dl in json.loads(rest.stdout)] == letters[2:]
    assert "--cursor" not in rest.stderr


def test_keys_rotate_narrows_the_new_key_to_the_permissions_given(
    acme: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("keys", "create", "--permission", "EVENTS:WRITE", "--permission", "KEYS:VIEW")
    (old,) = json.loads(invoke("keys", "list", "--json"))
    until = (utcnow() + timedelta(hours=1)).isoformat()
    out = invoke(
        "keys", "rotate", old["id"][:6], "--old-valid-until", until, "--permission", "KEYS:VIEW"
    )
    new_id = out.split()[1]
    (new,) = [k for k in json.loads(invoke("keys", "list", "--json")) if k["id"] == new_id]
    assert new["permissions"] == ["KEYS:VIEW"]
    assert "ENTITLEMENTS:MANAGE" in refused_one_line(
        monkeypatch, capsys, "keys", "rotate", new_id, "--old-valid-until", until,
        "--permission", "ENTITLEMENTS:MANAGE",
    )  # fmt: skip
    assert "NOT:A_PERMISSION" in refused(
        "keys", "rotate", new_id, "--old-valid-until", until, "--permission", "NOT:A_PERMISSION"
    )
