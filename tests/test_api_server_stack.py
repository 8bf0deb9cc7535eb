"""``meterd api`` serves on uvicorn's fast pair: the uvloop event loop and the
httptools parser (dependencies of meterd), named so a missing one fails at start."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn

from meterd.cli import serve

from .cli_support import invoke


def test_meterd_api_runs_uvicorn_on_uvloop_and_httptools(
    cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.update(options, app=app))
    monkeypatch.setenv("METERD_UNSAFE_REDIS", "1")  # fakeredis has no AOF
    invoke("db", "upgrade")
    invoke("api", "--port", "0")
    assert ran["app"] == "meterd.api.app:create_app"
    assert (ran["loop"], ran["http"]) == ("uvloop", "httptools")


def test_uvicorn_can_build_the_loop_and_parser_meterd_api_names() -> None:
    config = uvicorn.Config("meterd.api.app:create_app", loop=serve.LOOP, http=serve.HTTP)
    loop_factory = config.get_loop_factory()  # raises when uvloop is missing
    assert loop_factory is not None and loop_factory.__module__.startswith("uvloop")
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
