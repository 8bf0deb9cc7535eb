"""Running the ``meterd`` command line inside a test: the shared shapes of a command
that must succeed and of one a service refuses."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from meterd.cli import EXIT_REFUSED, app, main

runner = CliRunner()


def invoke(*args: str) -> str:
    """The output of a command that must succeed."""
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one line a refused command prints (exit status 2), run as ``meterd`` runs."""
    capsys.readouterr()
    monkeypatch.setattr("sys.argv", ["meterd", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == EXIT_REFUSED
    out = capsys.readouterr().out
    assert out.startswith("error: ") and out.count("\n") == 1, out
    return out
