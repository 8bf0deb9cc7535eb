"""docker-compose.yml: valid against the Compose schema, and production-safe as designed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_the_file_is_valid_against_the_compose_schema(compose: dict[str, Any]) -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []


def test_the_schema_check_catches_a_broken_file(compose: dict[str, Any]) -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    broken = {**compose, "services": {**compose["services"], "api": {"ports": "8000"}}}
    validator = jsonschema.Draft201909Validator(schema)
    assert list(validator.iter_errors(broken))


def test_redis_runs_with_aof_fsync_always_and_no_eviction(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    joined = " ".join(command)
    assert "--appendonly yes" in joined and "--appendfsync always" in joined
    assert "--maxmemory-policy noeviction" in joined


def test_migrations_run_before_workers_beat_and_api(compose: dict[str, Any]) -> None:
    for name in ("worker", "beat", "api", "flower"):
        depends = compose["services"][name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert compose["services"]["migrate"]["command"] == ["meterd", "db", "upgrade"]


def test_one_beat_behind_the_redbeat_lock_and_several_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["beat"]["deploy"]["replicas"] == 1
    assert "--redbeat" in services["beat"]["command"]
    assert services["worker"]["deploy"]["replicas"] >= 2


def test_every_meterd_service_shares_the_same_stores(compose: dict[str, Any]) -> None:
    urls = {
        name: (svc["environment"]["METERD_DATABASE_URL"], svc["environment"]["METERD_REDIS_URL"])
        for name, svc in compose["services"].items()
        if "environment" in svc and "METERD_DATABASE_URL" in svc["environment"]
    }
    assert set(urls) == {"migrate", "worker", "beat", "api", "flower"}
    assert len(set(urls.values())) == 1


def test_the_commands_exist_in_the_cli(compose: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from meterd.cli import app

    for name in ("worker", "beat", "api"):
        command = compose["services"][name]["command"]
        assert command[0] == "meterd"
        result = CliRunner().invoke(app, [command[1], "--help"])
        assert result.exit_code == 0, (name, result.output)
        for option in (c for c in command[2:] if c.startswith("--")):
            assert option in result.output, (name, option)
