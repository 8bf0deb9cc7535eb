"""``meterd holds``: the hold routes from the command line, printing what
``GET /v1/holds/{id}`` answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meterd.api.hold_values import HoldOut

from .cli_support import invoke, refused


def as_json(*args: str) -> Any:
    return json.loads(invoke(*args, "--json"))


@pytest.fixture
def acme(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    monkeypatch.setenv("METERD_ORG", "acme")
    invoke("feature", "create", "api_calls")
    invoke("entitlement", "create", "c-1", "api_calls", "--quantity", "10")


def test_holds_create_prints_the_hold_as_the_api_shows_it(acme: None) -> None:
    hold = as_json("holds", "create", "c-1", "api_calls", "4", "--key", "k1")
    assert set(hold) == set(HoldOut.model_fields)
    assert (hold["status"], hold["quantity"]) == ("held", "4")
    assert as_json("holds", "show", hold["id"]) == hold


def test_holds_settle_consumes_the_settled_quantity(acme: None) -> None:
    hold = as_json("holds", "create", "c-1", "api_calls", "4", "--key", "k1")
    settled = as_json("holds", "settle", hold["id"], "3")
    assert (settled["status"], settled["settled_quantity"]) == ("settled", "3")
    (balance,) = json.loads(invoke("balance", "c-1", "api_calls", "--json"))
    assert (balance["consumed"], balance["held"]) == ("3", "0")


def test_meterd_balance_shows_what_holds_keep(acme: None) -> None:
    as_json("holds", "create", "c-1", "api_calls", "4", "--key", "k1")
    (balance,) = json.loads(invoke("balance", "c-1", "api_calls", "--json"))
    assert (balance["consumed"], balance["held"], balance["remaining"]) == ("0", "4", "6")


def test_holds_release_frees_the_units(acme: None) -> None:
    hold = as_json("holds", "create", "c-1", "api_calls", "4", "--key", "k1")
    assert as_json("holds", "release", hold["id"])["status"] == "released"


def test_settling_a_released_hold_is_refused_naming_its_status(
    acme: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hold = as_json("holds", "create", "c-1", "api_calls", "4", "--key", "k1")
    invoke("holds", "release", hold["id"])
    assert "released" in refused(monkeypatch, capsys, "holds", "settle", hold["id"], "1")
