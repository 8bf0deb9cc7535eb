"""``meterd --help`` starts without the heavy stacks: a structural check, not a timed one
(``bench/cli_startup.py`` measures the time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from meterd import __version__
from meterd.cli import app

HEAVY = ("celery", "kombu", "fastapi", "starlette", "sqlalchemy", "redis", "uvicorn", "alembic")

_PROBE = """
import json, sys
{action}
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))))
"""


def heavy_modules_after(action: str) -> list[str]:
    """The heavy top-level packages a fresh interpreter holds after ``action``."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    code = _PROBE.format(action=action, heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_the_cli_imports_no_driver_celery_or_web_stack() -> None:
    assert heavy_modules_after("import meterd.cli") == []


def test_building_the_app_and_its_help_imports_no_driver_celery_or_web_stack() -> None:
    action = (
        "import contextlib, io\n"
        "from meterd.cli import app\n"
        "from typer.main import get_command\n"
        "command = get_command(app)\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for args in (['--help'], ['entitlement', '--help'], ['dlq', 'list', '--help']):\n"
        "        command.main(args, prog_name='meterd', standalone_mode=False)\n"
    )
    assert heavy_modules_after(action) == []


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"meterd {__version__}\n"


def test_the_default_worker_queues_are_meterds_queues() -> None:
    from meterd.celery_config import QUEUES
    from meterd.cli.serve import QUEUES as CLI_QUEUES

    assert CLI_QUEUES == QUEUES
