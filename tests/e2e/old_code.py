"""The code of an older meterd, materialised from git to run beside today's.

``materialise()`` writes ``git archive <commit>`` of this repository into a
directory; a process started with ``PYTHONPATH=<directory>/src`` and the same
interpreter (same venv, same dependencies) then imports the old ``meterd``.
Used by the in-place upgrade test (tests/e2e/test_upgrade_in_place.py) and the
back-to-back ingest bench (bench/ingest_vs_old.py).

b6213b7 is the commit issue 25 names as "the code of 2026-12-06": the version
its benchmarks compare with and its upgrade starts from.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

#: The version an upgrade starts from (issue 25: "the code of 2026-12-06").
OLD_COMMIT = "b6213b7"

REPO = Path(__file__).resolve().parents[2]


def materialise(dest: Path, commit: str = OLD_COMMIT) -> Path:
    """``git archive commit | tar -x -C dest``; returns the tree's ``src`` (for
    PYTHONPATH). A ``dest`` already holding it is used as it is."""
    src = dest / "src"
    if (src / "meterd" / "__init__.py").exists():
        return src
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return src


def env_for(src: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with PYTHONPATH naming only ``src``, so the
    processes started with it import that tree's ``meterd`` and not this one's."""
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = str(src)
    return out
