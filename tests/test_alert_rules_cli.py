"""``meterd alerts add|list|show|remove``: the alert rules of ``/v1/alert-rules``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .cli_support import invoke, refused


def as_json(*args: str) -> Any:
    return json.loads(invoke(*args, "--json"))


@pytest.fixture
def acme(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme", "--name", "Acme")
    monkeypatch.setenv("METERD_ORG", "acme")
    invoke("feature", "create", "api_calls", "--units", "calls")


def test_rules_are_added_listed_shown_and_removed(acme: None) -> None:
    assert "80 % and 100 %" in invoke("alerts", "list")
    percent = as_json("alerts", "add", "percent", "150")
    low = as_json("alerts", "add", "REMAINING", "100", "--feature", "api_calls")
    assert (percent["kind"], percent["threshold"], percent["scope"]) == ("PERCENT", "150", "org")
    assert (low["scope"], low["feature"]) == ("feature", "api_calls")
    assert [r["id"] for r in as_json("alerts", "list")] == [percent["id"], low["id"]]
    assert json.loads(invoke("alerts", "show", low["id"][:8])) == low
    assert low["id"] in invoke("alerts", "remove", low["id"])
    assert [r["id"] for r in as_json("alerts", "list")] == [percent["id"]]


def test_a_bad_rule_is_refused_in_one_line(
    acme: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "PERCENT" in refused(monkeypatch, capsys, "alerts", "add", "PERCENT", "12.34567")
    assert "not found" in refused(
        monkeypatch, capsys, "alerts", "add", "CONSUMED", "5", "--feature", "nope"
    )
