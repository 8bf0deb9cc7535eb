"""The layer rules of docs/architecture.md, held by the import-linter contracts in
pyproject.toml: bottom modules import nothing above them, services import no
Celery or FastAPI, api/ imports no store or model, and there is no import circle."""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold() -> None:
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
