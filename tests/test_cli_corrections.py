"""``meterd events void|amend``: the CLI's corrections, audited as made by ``cli``;
``meterd events CUSTOMER`` still lists."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meterd import runtime as runtime_module
from meterd.core.timeutil import utcnow
from meterd.testing import event

from .cli_support import invoke, refused
from .test_cli_parity import acme, grant  # noqa: F401  (the fixture)


def as_json(*args: str) -> Any:
    return json.loads(invoke(*args, "--json"))


def counted() -> None:
    grant("c-1", "api_calls", "--quantity", "10")
    runtime_module.get_runtime().ingest.ingest(
        [event(customer="c-1", quantity="2", event_id="e-1")], now=utcnow()
    )


def balance() -> str:
    (row,) = as_json("balance", "c-1", "api_calls")
    return str(row["consumed"])


def test_amend_then_void_from_the_command_line(acme: None) -> None:  # noqa: F811
    counted()
    data = '{"feature": "api_calls", "quantity": 3.5}'
    made = as_json("events", "amend", "--source", "tests", "--id", "e-1",
                   "--data", data, "--reason", "typo")  # fmt: skip
    assert (made["kind"], made["actor"], made["reason"]) == ("amend", "cli", "typo")
    assert balance() == "3.5"
    invoke("flush")
    made = as_json("events", "void", "--source", "tests", "--id", "e-1", "--reason", "test")
    assert [p["quantity"] for p in made["parts"]] == ["-3.5"]
    assert balance() == "0"
    invoke("flush")
    rows = as_json("events", "c-1")["data"]
    assert [r["quantity"] for r in rows] == ["2", "1.5", "-3.5"]
    assert "e-1" in invoke("events", "list", "c-1")


def test_a_second_void_and_an_unknown_event_are_refused(
    acme: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    counted()
    invoke("events", "void", "--source", "tests", "--id", "e-1", "--reason", "test")
    line = refused(monkeypatch, capsys, "events", "void", "--org", "acme", "--source", "tests",
                   "--id", "e-1", "--reason", "again")  # fmt: skip
    assert "already void" in line
    line = refused(monkeypatch, capsys, "events", "void", "--org", "acme", "--source", "tests",
                   "--id", "nope", "--reason", "x")  # fmt: skip
    assert "not found" in line
