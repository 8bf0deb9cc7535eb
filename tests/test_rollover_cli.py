"""Rollover from the command line: ``meterd plan create`` and ``meterd entitlement
create`` take ``--rollover-max``/``--rollover-min`` as the API takes its fields, and
list them as the API shows them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from meterd.cli import app

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def setup() -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    invoke("feature", "create", "--org", "acme", "api_calls")


def test_a_plan_created_with_rollover_shows_it(cli_env: None) -> None:
    setup()
    invoke(
        "plan", "create", "--org", "acme", "carry", "api_calls", "--quantity", "20",
        "--term-value", "1", "--term-unit", "MONTH", "--auto-renew",
        "--rollover-max", "15", "--rollover-min", "2",
    )  # fmt: skip
    (plan,) = json.loads(invoke("plan", "list", "--org", "acme", "--json"))
    assert (plan["rollover_max"], plan["rollover_min"]) == ("15", "2")


def test_an_entitlement_created_with_rollover_shows_it(cli_env: None) -> None:
    setup()
    invoke(
        "entitlement", "create", "--org", "acme", "c-1", "api_calls", "--quantity", "10",
        "--term-value", "1", "--term-unit", "MONTH", "--auto-renew", "--rollover-max", "5",
    )  # fmt: skip
    listed = json.loads(invoke("entitlement", "list", "--org", "acme", "--json"))
    (ent,) = listed["results"] if isinstance(listed, dict) else listed
    assert (ent["rollover_max"], ent["rollover_min"]) == ("5", None)
