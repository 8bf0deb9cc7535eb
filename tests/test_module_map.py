"""The module map is held to the code: every module of meterd sits in a layer of the
import-linter contracts (pyproject.toml), so a new module cannot escape the rule
that dependencies point one way, and the layer table of docs/architecture.md names
every top-level module and package."""

from __future__ import annotations

import pkgutil
import re
import tomllib
from pathlib import Path

import meterd

ROOT = Path(__file__).resolve().parents[1]
#: Alembic's revision scripts are loaded by path, one per schema version; they are
#: no part of the import graph.
OUTSIDE_THE_LAYERS = ("meterd.migrations",)


def contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return found


def every_module() -> list[str]:
    names = [
        info.name
        for info in pkgutil.walk_packages(meterd.__path__, prefix="meterd.")
        if not info.name.startswith(OUTSIDE_THE_LAYERS)
    ]
    return sorted(names)


def layer_entries(contract: dict[str, object]) -> list[str]:
    """The modules a layers contract places, each a package or a module."""
    layers = contract["layers"]
    assert isinstance(layers, list)
    containers = contract.get("containers") or [""]
    assert isinstance(containers, list)
    return [
        f"{container}.{name}" if container else name
        for container in containers
        for layer in layers
        for name in re.split(r"\s*[|:]\s*", str(layer))
    ]


def placed(module: str, entries: list[str]) -> bool:
    return any(module == e or module.startswith(e + ".") for e in entries)


def test_every_module_is_in_a_layer_of_the_import_contracts() -> None:
    main = next(c for c in contracts() if c["type"] == "layers" and "containers" not in c)
    entries = layer_entries(main)
    unplaced = [m for m in every_module() if not placed(m, entries)]
    assert not unplaced, f"modules in no layer of pyproject.toml's contract: {unplaced}"


def test_every_module_of_a_layered_package_is_in_one_of_its_layers() -> None:
    unplaced = []
    for contract in contracts():
        if contract["type"] != "layers" or "containers" not in contract:
            continue
        containers = contract["containers"]
        assert isinstance(containers, list)
        entries = layer_entries(contract)
        unplaced += [
            m
            for m in every_module()
            if any(m.startswith(c + ".") for c in containers) and not placed(m, entries)
        ]
    assert not unplaced, f"modules in no layer of their package's contract: {unplaced}"


def layer_table() -> str:
    """The rows of the layer table of docs/architecture.md (not the prose around it)."""
    docs = (ROOT / "docs" / "architecture.md").read_text()
    section = docs.split("## Layers", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def test_the_docs_layer_table_names_every_top_level_module() -> None:
    table = layer_table()
    top = sorted({m.split(".")[1] for m in every_module()})
    unnamed = [name for name in top if f"`{name}" not in table]
    assert not unnamed, (
        f"top-level modules the layer table of docs/architecture.md omits: {unnamed}"
    )


def test_the_docs_layer_table_names_every_module_of_each_package() -> None:
    """One level down: each module (or subpackage) of a package is named in its row."""
    table = layer_table()
    children = sorted({".".join(m.split(".")[:3]) for m in every_module() if m.count(".") >= 2})
    unnamed = [
        child
        for child in children
        if not child.rsplit(".", 1)[1].startswith("_")
        and not re.search(rf"\b{re.escape(child.rsplit('.', 1)[1])}\b", table)
    ]
    assert not unnamed, f"modules the layer table of docs/architecture.md omits: {unnamed}"
