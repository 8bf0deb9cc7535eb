"""The command line reaches what the API manages: organisations, features, plans and
entitlements listed, shown, created and changed; the counted events behind a bill;
ids printed whole and taken as unique prefixes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meterd import runtime as runtime_module
from meterd.cli import app
from meterd.core.timeutil import utcnow
from meterd.testing import event

from .cli_support import invoke, refused, runner


def as_json(*args: str) -> Any:
    return json.loads(invoke(*args, "--json"))


@pytest.fixture
def acme(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Org acme with feature api_calls; METERD_ORG names it for every command."""
    invoke("db", "upgrade")
    invoke("org", "create", "acme", "--name", "Acme")
    monkeypatch.setenv("METERD_ORG", "acme")
    invoke("feature", "create", "api_calls", "--units", "calls")


def grant(*args: str) -> str:
    """A new entitlement's id (whole), as ``entitlement create`` prints it."""
    return invoke("entitlement", "create", *args).split()[2]


def test_org_list_shows_every_organisation(acme: None) -> None:
    invoke("org", "create", "beta")
    assert [o["id"] for o in as_json("org", "list")] == ["acme", "beta"]
    assert "Acme" in invoke("org", "list")


def test_the_org_option_defaults_to_meterd_org_and_is_required_without_it(
    cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METERD_ORG", raising=False)
    result = runner.invoke(app, ["feature", "list"])
    assert result.exit_code != 0 and "--org" in result.output


def test_feature_list_show_and_update(acme: None) -> None:
    (listed,) = as_json("feature", "list")
    assert (listed["key"], listed["units"], listed["is_active"]) == ("api_calls", "calls", True)
    invoke("feature", "update", "api_calls", "--name", "API calls", "--retired")
    shown = as_json("feature", "show", "api_calls")
    assert (shown["name"], shown["is_active"], shown["scale"]) == ("API calls", False, 6)


def test_entitlement_list_and_show_print_quantities_as_the_api_does(acme: None) -> None:
    ent_id = grant("c-1", "api_calls", "--quantity", "10000")
    runtime_module.get_runtime().ingest.ingest(
        [event(customer="c-1", quantity="2.5")], now=utcnow()
    )
    page = as_json("entitlement", "list", "--customer", "c-1")
    (row,) = page["results"]
    assert (row["id"], row["quantity"], row["consumed"]) == (ent_id, "10000", "2.5")
    assert page["total_count"] == 1 and page["next"] is None
    table = invoke("entitlement", "list")
    assert ent_id in table and "10000.000000" not in table  # the id whole, in the table
    assert as_json("entitlement", "show", ent_id[:8])["remaining"] == "9997.5"


def test_an_unknown_or_short_id_prefix_is_refused_in_one_line(
    acme: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    grant("c-1", "api_calls")
    out = refused(monkeypatch, capsys, "entitlement", "show", "ffffffff-0")
    assert out == "error: entitlement ffffffff-0 not found\n"
    assert "at least 4" in refused(monkeypatch, capsys, "entitlement", "show", "ab")


def test_an_ambiguous_id_prefix_names_the_ids_it_matches() -> None:
    from meterd.cli.ids import match_prefix
    from meterd.core.errors import InvalidError

    known = ["0a1b2c3d", "0a1b9999", "ffff0000"]
    assert match_prefix("ffff", known, "plan") == "ffff0000"
    assert match_prefix("0A1B2", known, "plan") == "0a1b2c3d"
    with pytest.raises(InvalidError, match=r"'0a1b' is ambiguous: 2 match \(0a1b2c3d, 0a1b9999\)"):
        match_prefix("0a1b", known, "plan")


def test_entitlement_update_changes_the_quantity_at_the_row_version(acme: None) -> None:
    ent_id = grant("c-1", "api_calls", "--quantity", "10")
    out = invoke("entitlement", "update", ent_id[:8], "--version", "1", "--quantity", "25")
    assert "row_version 2" in out
    assert as_json("entitlement", "show", ent_id)["quantity"] == "25"
    invoke("entitlement", "update", ent_id, "--version", "2", "--quantity", "none")
    assert as_json("entitlement", "show", ent_id)["quantity"] is None


def test_entitlement_create_takes_a_renewing_term(acme: None) -> None:
    ent_id = grant("c-1", "api_calls", "--quantity", "100", "--term-value", "1",
                   "--term-unit", "MONTH", "--auto-renew", "--renewal-quantity", "50")  # fmt: skip
    shown = as_json("entitlement", "show", ent_id)
    assert (shown["auto_renew"], shown["renewal_quantity"]) == (True, "50")
    assert shown["ends_at"] is not None


def test_plans_are_created_listed_shown_and_grant_entitlements(acme: None) -> None:
    out = invoke("plan", "create", "pro", "api_calls", "--quantity", "1000",
                 "--term-value", "1", "--term-unit", "MONTH", "--auto-renew")  # fmt: skip
    plan_id = out.split("(")[1].split(")")[0]
    (listed,) = as_json("plan", "list")
    assert (listed["id"], listed["key"], listed["quantity"]) == (plan_id, "pro", "1000")
    assert as_json("plan", "show", plan_id[:6])["term_unit"] == "MONTH"
    ent_id = grant("c-7", "--plan", plan_id[:6])
    shown = as_json("entitlement", "show", ent_id)
    assert (shown["plan_id"], shown["feature"], shown["quantity"]) == (plan_id, "api_calls", "1000")


def test_a_plan_is_renamed_and_retired_from_the_cli_as_by_patch(acme: None) -> None:
    out = invoke("plan", "create", "pro", "api_calls", "--quantity", "1000")
    plan_id = out.split("(")[1].split(")")[0]
    invoke("plan", "update", plan_id[:6], "--display-name", "Pro 2027", "--retired")
    shown = as_json("plan", "show", plan_id)
    assert (shown["display_name"], shown["is_active"], shown["row_version"]) == (
        "Pro 2027",
        False,
        2,
    )


def test_a_plan_update_at_a_stale_version_is_refused(
    acme: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = invoke("plan", "create", "pro", "api_calls", "--quantity", "1000")
    plan_id = out.split("(")[1].split(")")[0]
    invoke("plan", "update", plan_id, "--description", "first")
    line = refused(monkeypatch, capsys, "plan", "update", plan_id, "--version", "1",
                   "--description", "second")  # fmt: skip
    assert "version" in line


def test_events_lists_the_counted_events_of_a_customer(acme: None) -> None:
    ent_id = grant("c-1", "api_calls", "--quantity", "10")
    runtime_module.get_runtime().ingest.ingest(
        [event(customer="c-1", quantity="2", event_id="e-1")], now=utcnow()
    )
    invoke("flush")  # the event log is written with the counts
    page = as_json("events", "c-1", "--feature", "api_calls")
    (counted,) = page["data"]
    assert (counted["id"], counted["quantity"], counted["entitlement_id"]) == ("e-1", "2", ent_id)
    assert page["next"] is None
    assert "e-1" in invoke("events", "c-1")


def test_keys_and_dead_letters_take_id_prefixes(acme: None) -> None:
    token = invoke("keys", "create", "--permission", "EVENTS:WRITE").strip().splitlines()[-1]
    key_id = token.split("_")[1]
    assert f"key {key_id} revoked" in invoke("keys", "revoke", key_id[:6])
    runtime_module.get_runtime().ingest.ingest([{"not": "an event"}], now=utcnow())
    (letter,) = as_json("dlq", "list")
    assert json.loads(invoke("dlq", "show", letter["id"][:8]))["id"] == letter["id"]
