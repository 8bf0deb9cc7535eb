"""``meterd entitlement allot|allotments``: the allotments of
``/v1/entitlements/{id}/allotments`` from the command line."""

from __future__ import annotations

import json
import re

import pytest

from .cli_support import invoke, refused


@pytest.fixture
def parent(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> str:
    invoke("db", "upgrade")
    invoke("org", "create", "acme", "--name", "Acme")
    monkeypatch.setenv("METERD_ORG", "acme")
    invoke("feature", "create", "api_calls", "--units", "calls")
    out = invoke("entitlement", "create", "provider", "api_calls", "--quantity", "10")
    found = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", out)
    assert found, out
    return found.group(0)


def test_allot_then_list(
    parent: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = invoke("entitlement", "allot", parent, "--customer", "child-1", "--quantity", "4")
    assert "allotted" in out and "child-1" in out
    again = invoke(
        "entitlement", "allot", parent, "--customer", "child-2", "--quantity", "1",
        "--idempotency-key", "k",
    )  # fmt: skip
    assert "allotted" in again
    assert "already allotted" in invoke(
        "entitlement", "allot", parent, "--customer", "child-2", "--quantity", "1",
        "--idempotency-key", "k",
    )  # fmt: skip
    listed = json.loads(invoke("entitlement", "allotments", parent[:8], "--json"))
    assert (listed["allotted"], listed["remaining"]) == ("5", "5")
    assert [r["customer_id"] for r in listed["results"]] == ["child-1", "child-2"]
    assert "remaining" in refused(
        monkeypatch, capsys, "entitlement", "allot", parent, "--customer", "c", "--quantity", "6"
    )
