"""docker-compose.yml: valid against the Compose schema, and production-safe as designed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from meterd.testing import free_port, wait_until

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


_DEFAULTED = re.compile(r"^\$\{(?P<var>[A-Z_]+):-(?P<default>[^}]+)\}$")


def defaulted(value: str) -> tuple[str, str]:
    """``${VAR:-default}``: the variable and its default. ``:-`` (not ``-``) also
    replaces an empty value, so a blank variable cannot switch a password off."""
    match = _DEFAULTED.match(value)
    assert match, f"{value!r} is not ${{VAR:-default}}"
    return match["var"], match["default"]


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's volumes: the path inside the container -> the host path or volume."""
    return {target: source for source, target, *_ in (v.split(":") for v in service["volumes"])}


def published_ports(service: dict[str, Any]) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


def test_flower_asks_for_basic_auth_from_meterd_flower_auth(compose: dict[str, Any]) -> None:
    env = compose["services"]["flower"]["environment"]
    var, default = defaulted(env["FLOWER_BASIC_AUTH"])
    assert var == "METERD_FLOWER_AUTH"
    user, _, password = default.partition(":")
    assert user and password


def test_services_without_their_own_login_listen_on_loopback_only(compose: dict[str, Any]) -> None:
    for name in ("flower", "prometheus", "grafana"):
        ports = published_ports(compose["services"][name])
        assert ports and all(p.startswith("127.0.0.1:") for p in ports), (name, ports)


def test_prometheus_and_grafana_mount_files_of_the_repo_read_only(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name in ("prometheus", "grafana"):
        service = compose["services"][name]
        image, _, tag = service["image"].partition(":")
        assert tag and tag != "latest" and image, (name, service["image"])
        binds = [v.split(":") for v in service["volumes"] if v.startswith("./")]
        assert binds, name
        for source, _target, mode in binds:
            assert (ROOT / source).exists(), (name, source)
            assert mode == "ro", (name, source)
        data = [v.split(":")[0] for v in service["volumes"] if not v.startswith("./")]
        assert data and set(data) <= declared, (name, data)


def test_prometheus_scrapes_the_api_and_each_workers_exporter_every_15_s(
    compose: dict[str, Any],
) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "15s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    services = compose["services"]

    (worker_sd,) = jobs["meterd-worker"]["dns_sd_configs"]
    assert worker_sd["names"] == ["worker"]
    assert str(worker_sd["port"]) == services["worker"]["environment"]["METERD_METRICS_PORT"]

    api = jobs["meterd-api"]
    assert api["metrics_path"] == "/metrics"
    assert api["static_configs"] == [{"targets": ["api:8000"]}]
    assert "--port" in services["api"]["command"] and "8000" in services["api"]["command"]
    # /metrics needs a key with METRICS:VIEW: read from the mounted secrets folder.
    key_file = Path(api["authorization"]["credentials_file"])
    assert mounts(services["prometheus"])[str(key_file.parent)] == "./deploy/prometheus/secrets"


def test_grafana_has_no_anonymous_viewer_and_an_admin_password_to_change(
    compose: dict[str, Any],
) -> None:
    env = compose["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    var, default = defaulted(env["GF_SECURITY_ADMIN_PASSWORD"])
    assert var == "METERD_GRAFANA_ADMIN_PASSWORD" and default != "admin"


def test_flower_as_compose_runs_it_refuses_a_request_without_credentials(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    service = compose["services"]["flower"]
    _, credentials = defaulted(service["environment"]["FLOWER_BASIC_AUTH"])
    port = free_port()
    dead = f"redis://127.0.0.1:{free_port()}"  # Flower serves its pages without a broker
    env = {
        **os.environ,
        "FLOWER_BASIC_AUTH": credentials,
        "METERD_BROKER_URL": dead + "/1",
        "METERD_REDIS_URL": dead + "/0",
        "METERD_DATABASE_URL": f"sqlite:///{tmp_path / 'flower.db'}",
    }
    command = [c for c in service["command"] if not c.startswith("--port")]
    assert command[0] == "celery"
    args = [sys.executable, "-m", *command, f"--port={port}", "--address=127.0.0.1"]
    base = f"http://127.0.0.1:{port}"
    with subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as flower:
        try:
            wait_until(lambda: _status(base + "/healthcheck") == 200, 30, "Flower to answer")
            for path in ("/", "/api/workers", "/tasks"):
                assert _status(base + path) == 401, path
            user, _, password = credentials.partition(":")
            assert httpx.get(base + "/", auth=(user, password), timeout=5).status_code == 200
            assert httpx.get(base + "/", auth=(user, "wrong"), timeout=5).status_code == 401
        finally:
            flower.terminate()
            flower.wait(10)


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None
