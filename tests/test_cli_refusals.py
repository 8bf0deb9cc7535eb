"""What the catalog refuses, the CLI refuses too (``error: ...``, exit 2), as the
API does: fields a plan gives beside ``--plan``, a priority the column cannot hold,
a term of more than 900 years. ``entitlement update`` takes ``--version`` as the
other changing commands do: optional (the row as read)."""

from __future__ import annotations

import json

import pytest

from meterd.cli import main

from .cli_support import invoke, refused


@pytest.fixture
def plan_id(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """Org acme (METERD_ORG) with feature api_calls and a plan ``pro`` of it."""
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    monkeypatch.setenv("METERD_ORG", "acme")
    invoke("feature", "create", "api_calls")
    invoke("plan", "create", "pro", "api_calls", "--quantity", "10")
    found: str = json.loads(invoke("plan", "list", "--json"))[0]["id"]
    return found


def entitlements() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(invoke("entitlement", "list", "--json"))["results"]
    return rows


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (["api_calls"], "FEATURE"),
        (["--quantity", "5"], "--quantity"),
        (["--ends", "2030-01-01T00:00:00Z"], "--ends"),
        (["--term-value", "1", "--term-unit", "MONTH"], "--term-value, --term-unit"),
        (["--auto-renew"], "--auto-renew"),
        (["--no-auto-renew"], "--auto-renew"),
        (["--renewal-quantity", "5"], "--renewal-quantity"),
        (["--billing-type", "PRE_PAID"], "--billing-type"),
        (["--contract-mode", "TRIAL"], "--contract-mode"),
        (["--grace-days", "3"], "--grace-days"),
    ],
)
def test_entitlement_create_refuses_what_the_plan_gives_beside_plan(
    plan_id: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    given: list[str],
    named: str,
) -> None:
    out = refused(monkeypatch, capsys, "entitlement", "create", "c-1", *given, "--plan", plan_id)
    assert out.startswith(f"error: {named}: not taken with a plan"), out
    assert entitlements() == []


def test_entitlement_create_from_a_plan_takes_priority_and_contract_id(plan_id: str) -> None:
    invoke("entitlement", "create", "c-1", "--plan", plan_id, "--priority", "2",
           "--contract-id", "k-1")  # fmt: skip
    (ent,) = entitlements()
    assert (ent["quantity"], ent["priority"], ent["contract_id"]) == ("10", 2, "k-1")


def test_a_priority_the_column_cannot_hold_is_refused(
    plan_id: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    too_big = str(10**10)
    out = refused(monkeypatch, capsys, "entitlement", "create", "c-1", "api_calls",
                  "--priority", too_big)  # fmt: skip
    assert "priority must be from -1,000,000 to 1,000,000" in out
    out = refused(monkeypatch, capsys, "entitlement", "create", "c-1", "--plan", plan_id,
                  "--priority", too_big)  # fmt: skip
    assert "priority" in out
    assert entitlements() == []
    invoke("entitlement", "create", "c-1", "api_calls")
    ent_id = str(entitlements()[0]["id"])
    out = refused(monkeypatch, capsys, "entitlement", "update", ent_id, "--priority", "-" + too_big)
    assert "priority must be from" in out
    assert entitlements()[0]["priority"] == 0


def test_a_term_of_more_than_900_years_is_refused(
    plan_id: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    term = ("--term-value", "901", "--term-unit", "YEAR")
    out = refused(monkeypatch, capsys, "entitlement", "create", "c-1", "api_calls", *term)
    assert out == "error: term_value: a term is at most 900 years\n"
    out = refused(monkeypatch, capsys, "plan", "create", "ages", "api_calls", *term)
    assert out == "error: term_value: a term is at most 900 years\n"


def test_entitlement_update_without_version_changes_the_row_as_read(plan_id: str) -> None:
    invoke("entitlement", "create", "c-1", "api_calls", "--quantity", "10")
    ent_id = str(entitlements()[0]["id"])
    invoke("entitlement", "update", ent_id, "--quantity", "20000")
    invoke("entitlement", "update", ent_id, "--priority", "4")
    (ent,) = entitlements()
    assert (ent["quantity"], ent["priority"], ent["row_version"]) == ("20000", 4, 3)


def test_entitlement_update_with_a_stale_version_is_refused(
    plan_id: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("entitlement", "create", "c-1", "api_calls", "--quantity", "10")
    ent_id = str(entitlements()[0]["id"])
    invoke("entitlement", "update", ent_id, "--version", "1", "--quantity", "20")
    capsys.readouterr()
    monkeypatch.setattr("sys.argv", ["meterd", "entitlement", "update", ent_id,
                                     "--version", "1", "--quantity", "30"])  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code != 0
    assert entitlements()[0]["quantity"] == "20"
