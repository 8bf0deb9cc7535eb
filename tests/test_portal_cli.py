"""``meterd portal``: mint a customer portal link (as ``POST /v1/portal-tokens``) and
retire the key that signs them."""

from __future__ import annotations

import json

import pytest

from meterd import runtime as runtime_module
from meterd.core.timeutil import utcnow

from .cli_support import invoke, refused


def test_portal_link_mints_a_token_the_portal_verifies(
    cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METERD_PUBLIC_URL", "https://meter.example.com")
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    minted = json.loads(
        invoke("portal", "link", "--org", "acme", "cust-1", "--expires-in", "120", "--json")
    )
    assert minted["url"] == f"https://meter.example.com/portal#token={minted['token']}"
    access = runtime_module.get_runtime().portal_tokens.verify(minted["token"], utcnow())
    assert (access.org, access.customer_id) == ("acme", "cust-1")


def test_portal_link_refuses_an_expiry_out_of_bounds(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    out = refused(monkeypatch, capsys, "portal", "link", "--org", "acme", "c", "--expires-in", "5")
    assert "expires_in" in out


def test_rotate_key_makes_the_next_link_use_a_new_key(cli_env: None) -> None:
    import jwt

    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    assert "no current key" in invoke("portal", "rotate-key")
    first = json.loads(invoke("portal", "link", "--org", "acme", "c", "--json"))["token"]
    kid = jwt.get_unverified_header(first)["kid"]
    assert kid in invoke("portal", "rotate-key")
    second = json.loads(invoke("portal", "link", "--org", "acme", "c", "--json"))["token"]
    assert jwt.get_unverified_header(second)["kid"] != kid
    assert runtime_module.get_runtime().portal_tokens.verify(first, utcnow()).customer_id == "c"
