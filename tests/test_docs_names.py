"""The docs name only what exists: every ``meterd.x.y`` name and every ``.py`` or
``.lua`` path written in backticks in README.md and docs/*.md resolves in this
checkout (a module, an attribute of one, a Celery task or queue name; a file). A
module moved or renamed without its mentions fails here, so the maps a newcomer
reads first cannot point at what is gone."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from meterd import celery_config
from meterd.core.holds import HOLD_SOURCE
from meterd.core.meters import USAGE_EVENT_TYPE

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NAME = re.compile(r"`(meterd(?:\.[A-Za-z_]\w*)+)")
PATH = re.compile(r"`((?:[\w.-]+/)*[\w.-]+\.(?:py|lua))\b")


#: Names that look like module paths and are not: the embedded default's database
#: file, the CloudEvents type of a usage event and the source of a settled hold.
NOT_MODULES = {"meterd.db", USAGE_EVENT_TYPE, HOLD_SOURCE}


def celery_names() -> set[str]:
    """Every queue and task name meterd defines (they look like module paths)."""
    return {
        value
        for value in vars(celery_config).values()
        if isinstance(value, str) and value.startswith("meterd.")
    }


def mentions(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    return sorted({(doc.name, found) for doc in DOCS for found in pattern.findall(doc.read_text())})


def resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 1, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(target, attr):
                return False
            target = getattr(target, attr)
        return True
    return False


def test_every_meterd_name_the_docs_write_exists() -> None:
    tasks = celery_names() | NOT_MODULES
    stale = [
        f"{doc}: {name}"
        for doc, name in mentions(NAME)
        if name not in tasks
        and not any(name.startswith(t + ".") for t in tasks)
        and not resolves(name)
    ]
    assert not stale, f"names in the docs that resolve to nothing: {stale}"


@pytest.mark.parametrize("base", ["", "src", "src/meterd"])
def test_path_bases_exist(base: str) -> None:
    assert (ROOT / base).is_dir()


def test_every_source_path_the_docs_write_exists() -> None:
    """A path is taken from the checkout's root, src/ or src/meterd/; a bare file
    name (``ingest.lua``, ``test_x.py``) must name a file somewhere in the tree."""
    bases = [ROOT, ROOT / "src", ROOT / "src" / "meterd"]
    names = {
        p.name for d in ("src", "tests", "bench") for p in (ROOT / d).rglob("*") if p.is_file()
    }
    stale = [
        f"{doc}: {path}"
        for doc, path in mentions(PATH)
        if not any((base / path).exists() for base in bases)
        and not ("/" not in path and path in names)
        and not path.startswith("meterd.")  # a module name (meterd.lua): the test above
    ]
    assert not stale, f"file paths in the docs that do not exist: {stale}"
