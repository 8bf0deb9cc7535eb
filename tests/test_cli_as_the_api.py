"""What the CLI prints of a feature, plan, entitlement or usage window is what the
API answers: the same fields, times in UTC with a ``Z``, and ``--json`` taken by
every read command (a no-op on ``show``, which prints JSON anyway)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meterd.api.catalog import FeatureOut, PlanOut
from meterd.api.entitlements import EntitlementOut
from meterd.api.usage_history import UsageWindow
from tests.test_cli import at, counted_usage, days_ago

from .cli_support import invoke


def as_json(*args: str) -> Any:
    return json.loads(invoke(*args, "--json"))


@pytest.fixture
def acme(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Org acme with feature api_calls, a plan of it and an entitlement from the plan."""
    invoke("db", "upgrade")
    invoke("org", "create", "acme")
    monkeypatch.setenv("METERD_ORG", "acme")
    invoke("feature", "create", "api_calls")
    invoke("plan", "create", "pro", "api_calls", "--quantity", "10", "--family", "tier")
    plan_id = as_json("plan", "list")[0]["id"]
    invoke("entitlement", "create", "c-1", "--plan", plan_id)


def test_feature_show_has_exactly_the_fields_of_the_api_feature(acme: None) -> None:
    assert set(as_json("feature", "show", "api_calls")) == set(FeatureOut.model_fields)
    assert set(as_json("feature", "list")[0]) == set(FeatureOut.model_fields)


def test_plan_show_has_exactly_the_fields_of_the_api_plan(acme: None) -> None:
    (listed,) = as_json("plan", "list")
    shown = as_json("plan", "show", listed["id"])
    assert set(shown) == set(listed) == set(PlanOut.model_fields)
    (family,) = shown["families"]
    assert family["key"] == "tier" and set(family) == {"id", "key", "display_name"}


def test_entitlement_show_has_exactly_the_fields_of_the_api_entitlement(acme: None) -> None:
    (listed,) = as_json("entitlement", "list")["results"]
    shown = as_json("entitlement", "show", listed["id"])
    assert set(shown) == set(listed) == set(EntitlementOut.model_fields)
    assert shown["allotment"] is None and shown["parent_id"] is None


def test_times_print_in_utc_with_a_z_as_the_api_prints_them(acme: None) -> None:
    (ent,) = as_json("entitlement", "list")["results"]
    for name in ("starts_at", "issued_at", "created_at", "updated_at", "period_start"):
        assert ent[name].endswith("Z") and "+00:00" not in ent[name], (name, ent[name])
    assert as_json("feature", "show", "api_calls")["created_at"].endswith("Z")


def test_show_commands_take_json_and_print_the_same_document(acme: None) -> None:
    plan_id = as_json("plan", "list")[0]["id"]
    assert json.loads(invoke("plan", "show", plan_id)) == as_json("plan", "show", plan_id)
    assert json.loads(invoke("feature", "show", "api_calls")) == as_json(
        "feature", "show", "api_calls"
    )


def test_usage_as_json_has_the_items_of_get_v1_usage(cli_env: None) -> None:
    first, second = days_ago(2), days_ago(0)
    counted_usage((at(first, "10:00"), "2.5"), (at(first, "11:00"), "1"))
    rows = as_json(
        "usage", "--org", "acme", "--from", at(first, "00:00"), "--to", at(second, "00:00"),
        "--group-by", "entitlement",
    )  # fmt: skip
    (row,) = rows
    assert set(row) <= set(UsageWindow.model_fields)
    assert (row["customer_id"], row["feature"], row["quantity"], row["events"]) == (
        "c-1",
        "api_calls",
        "3.5",
        2,
    )
    assert row["window_start"].startswith(f"{first:%Y-%m-%d}T00:00:00")
    plain = as_json("usage", "--org", "acme", "--from", at(first, "00:00"))
    assert "customer_id" not in plain[0] and plain[0]["quantity"] == "3.5"
