"""The command line creates metered features (scale, aggregation, raw-event meters) and
entitlements with dimensions, and refuses what the catalog refuses, in one line."""

from __future__ import annotations

import uuid

import pytest
from typer.testing import CliRunner

from meterd import runtime as runtime_module
from meterd.cli import EXIT_REFUSED, app, main

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr("sys.argv", ["meterd", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    return int(stopped.value.code or 0)


def refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one line a refused command prints (exit status 2)."""
    capsys.readouterr()
    assert run_main(monkeypatch, *args) == EXIT_REFUSED
    out = capsys.readouterr().out
    assert out.startswith("error: ") and out.count("\n") == 1, out
    return out


@pytest.fixture
def org(cli_env: None) -> None:
    invoke("db", "upgrade")
    invoke("org", "create", "acme")


def test_feature_create_takes_a_raw_event_meter(org: None) -> None:
    invoke("feature", "create", "--org", "acme", "input_tokens", "--scale", "0",
           "--event-type", "llm.request", "--value-property", "$.usage.input_tokens",
           "--meter-filter", "model=gpt-4o", "--meter-filter", "tier=2",
           "--meter-filter", "cached=false")  # fmt: skip
    feature = runtime_module.get_runtime().catalog.feature("acme", "input_tokens")
    assert (feature.scale, feature.aggregation, feature.event_type) == (0, "SUM", "llm.request")
    assert feature.value_property == "usage.input_tokens"
    assert feature.meter_filters == {"model": "gpt-4o", "tier": 2, "cached": False}


@pytest.mark.parametrize("aggregation", ["SUM", "COUNT", "UNIQUE_COUNT", "MAX", "LATEST"])
def test_feature_create_takes_each_aggregation(org: None, aggregation: str) -> None:
    invoke("feature", "create", "--org", "acme", "f", "--aggregation", aggregation,
           "--event-type", "e", "--value-property", "v")  # fmt: skip
    assert runtime_module.get_runtime().catalog.feature("acme", "f").aggregation == aggregation


def test_feature_create_without_a_meter_sums_usage_events_at_scale_6(org: None) -> None:
    invoke("feature", "create", "--org", "acme", "api_calls")
    feature = runtime_module.get_runtime().catalog.feature("acme", "api_calls")
    assert (feature.scale, feature.aggregation, feature.event_type) == (6, "SUM", None)
    assert (feature.value_property, feature.meter_filters) == (None, None)


def test_feature_create_refuses_a_meter_without_its_value_property(
    org: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = refused(
        monkeypatch, capsys, "feature", "create", "--org", "acme", "f", "--event-type", "e"
    )
    assert (
        out
        == "error: a SUM meter over 'e' events needs value_property: the data property it reads\n"
    )


def test_feature_create_refuses_an_unknown_aggregation_naming_the_known_ones(
    org: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = refused(
        monkeypatch, capsys, "feature", "create", "--org", "acme", "f", "--aggregation", "AVG"
    )
    assert out == "error: aggregation 'AVG' is not one of SUM, COUNT, UNIQUE_COUNT, MAX, LATEST\n"


def test_feature_create_refuses_a_scale_above_6(
    org: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = refused(monkeypatch, capsys, "feature", "create", "--org", "acme", "f", "--scale", "7")
    assert "scale must be an integer from 0 to 6" in out


def test_feature_create_refuses_a_meter_filter_without_an_equals_sign(
    org: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = refused(monkeypatch, capsys, "feature", "create", "--org", "acme", "f",
                  "--event-type", "e", "--value-property", "v",
                  "--meter-filter", "model")  # fmt: skip
    assert out == "error: --meter-filter 'model' must be key=value, e.g. model=gpt-4o\n"


def test_entitlement_create_takes_repeated_filters_typed(org: None) -> None:
    invoke("feature", "create", "--org", "acme", "api_calls")
    out = invoke("entitlement", "create", "--org", "acme", "c-1", "api_calls", "--quantity", "10",
                 "--filter", "model=gpt-4o", "--filter", "zone=3", "--filter", "beta=true",
                 "--filter", "code=007x")  # fmt: skip
    ent = runtime_module.get_runtime().entitlements.get(uuid.UUID(out.split()[2]))
    assert ent.filters == {"model": "gpt-4o", "zone": 3, "beta": True, "code": "007x"}


def test_entitlement_create_without_filters_stores_none(org: None) -> None:
    invoke("feature", "create", "--org", "acme", "api_calls")
    out = invoke("entitlement", "create", "--org", "acme", "c-1", "api_calls")
    ent = runtime_module.get_runtime().entitlements.get(uuid.UUID(out.split()[2]))
    assert ent.filters is None


def test_entitlement_create_refuses_a_filter_naming_a_key_twice(
    org: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("feature", "create", "--org", "acme", "api_calls")
    out = refused(monkeypatch, capsys, "entitlement", "create", "--org", "acme", "c-1", "api_calls",
                  "--filter", "model=a", "--filter", "model=b")  # fmt: skip
    assert out == "error: --filter names 'model' twice\n"


def test_entitlement_create_refuses_a_filter_that_is_not_a_dotted_path(
    org: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("feature", "create", "--org", "acme", "api_calls")
    out = refused(monkeypatch, capsys, "entitlement", "create", "--org", "acme", "c-1", "api_calls",
                  "--filter", "a b=1")  # fmt: skip
    assert "filters property 'a b' is not a dotted path" in out


def test_entitlement_create_refuses_a_grant_finer_than_the_features_scale(
    org: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("feature", "create", "--org", "acme", "seats", "--scale", "0")
    out = refused(monkeypatch, capsys, "entitlement", "create", "--org", "acme", "c-1", "seats",
                  "--quantity", "1.5")  # fmt: skip
    assert out == (
        "error: quantity 1.5 has more fractional digits than its feature counts"
        " (scale 0: at most 0 after the point)\n"
    )


def test_entitlement_create_takes_10_to_the_15_at_scale_0_and_refuses_past_the_bound(
    org: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke("feature", "create", "--org", "acme", "seats", "--scale", "0")
    invoke("entitlement", "create", "--org", "acme", "c-1", "seats", "--quantity", str(10**15))
    out = refused(monkeypatch, capsys, "entitlement", "create", "--org", "acme", "c-1", "seats",
                  "--quantity", "9007199254740992")  # fmt: skip
    assert "at most 9007199254740991" in out
