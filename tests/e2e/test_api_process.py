"""`meterd api` serves the API from its own process (uvicorn), against the real stores."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from meterd.runtime import Runtime
from meterd.services.keys import Permission
from meterd.testing import wait_until

from ..conftest import NOW

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def api_base(e2e_env: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "meterd.cli", "api", "--port", str(port)],
        env=e2e_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(base), 30, "meterd api to answer")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_meterd_api_serves_health_the_spec_and_authenticated_reads(
    api_base: str, e2e_runtime: Runtime
) -> None:
    assert httpx.get(api_base + "/readyz").json()["checks"] == {"database": "ok", "redis": "ok"}
    spec = httpx.get(api_base + "/openapi.json").json()
    assert "/v1/customers/{customer_id}/features/{feature}/reserve" in spec["paths"]
    assert httpx.get(api_base + "/docs").status_code == 200
    token, _ = e2e_runtime.keys_service.create("acme", [Permission.ENTITLEMENTS_VIEW], NOW)
    url = api_base + "/v1/customers/c-1/features/api_calls"
    assert httpx.get(url).status_code == 401
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json()["state"] == "NO_ENTITLEMENT"
