"""meterd.lua assembles a script from fragments (``--- @include``), each fragment once,
with a clear error for a missing fragment or a cycle; every script is read through it."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest

from meterd.lua import INCLUDE, LuaIncludeError, assemble, script_source

LUA_ROOT = Path(str(resources.files("meterd.lua")))
SCRIPTS = sorted(p.stem for p in LUA_ROOT.glob("*.lua"))
SOURCES = sorted(LUA_ROOT.rglob("*.lua"))


def reader(files: dict[str, str]) -> Callable[[str], str]:
    def read(name: str) -> str:
        if name not in files:
            raise FileNotFoundError(name)
        return files[name]

    return read


def test_an_include_line_is_replaced_by_the_fragment_text() -> None:
    files = {"main.lua": 'local a = 1\n--- @include "lib/x"\nreturn a\n', "lib/x.lua": "a = 2\n"}
    assert assemble("main", reader(files)) == "local a = 1\na = 2\nreturn a\n"


def test_includes_are_resolved_recursively_and_each_fragment_enters_once() -> None:
    files = {
        "main.lua": '--- @include "b"\n--- @include "c"\n--- @include "b"\n',
        "b.lua": '--- @include "c"\nB\n',
        "c.lua": "C\n",
    }
    text = assemble("main", reader(files))
    assert [line for line in text.splitlines() if not line.startswith("--")] == ["C", "B"]


def test_a_missing_fragment_is_named_with_its_includer() -> None:
    files = {"main.lua": '--- @include "lib/nowhere"\n'}
    with pytest.raises(LuaIncludeError, match=r"main\.lua includes lib/nowhere\.lua"):
        assemble("main", reader(files))


def test_an_include_cycle_is_refused_with_its_chain() -> None:
    files = {
        "a.lua": '--- @include "b"\n',
        "b.lua": '--- @include "c"\n',
        "c.lua": '--- @include "a"\n',
    }
    with pytest.raises(LuaIncludeError, match=r"a\.lua -> b\.lua -> c\.lua -> a\.lua"):
        assemble("a", reader(files))


def test_a_fragment_including_itself_is_a_cycle() -> None:
    with pytest.raises(LuaIncludeError, match="cycle"):
        assemble("a", reader({"a.lua": '--- @include "a"\n'}))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_assembles_without_an_include_left(name: str) -> None:
    text = script_source(name)
    assert INCLUDE.search(text) is None
    assert script_source(f"{name}.lua") == text


def test_the_ingest_script_takes_each_fragment_once() -> None:
    text = script_source("ingest")
    for fragment in sorted((LUA_ROOT / "ingest").glob("*.lua")):
        first_line = fragment.read_text("utf-8").splitlines()[0]
        assert text.count(first_line) == 1, fragment.name


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(LUA_ROOT)))
def test_no_lua_source_file_is_over_300_lines(path: Path) -> None:
    assert len(path.read_text("utf-8").splitlines()) <= 300


#: Reading a script's file, or registering a text not from the loader.
OWN_LOADING = re.compile(
    r"""joinpath\(\s*["']lua|open\([^)]*\.lua|register_script\((?!script_source)"""
)


def test_no_module_reads_a_lua_file_but_the_loader() -> None:
    src = Path(str(resources.files("meterd")))
    readers = [
        p.relative_to(src).as_posix()
        for p in src.rglob("*.py")
        if p != LUA_ROOT / "__init__.py" and OWN_LOADING.search(p.read_text("utf-8"))
    ]
    assert readers == []


def test_the_loading_check_catches_the_old_loaders() -> None:
    old = 'client.register_script(resources.files("meterd").joinpath("lua", name).read_text())'
    assert OWN_LOADING.search(old)
    assert OWN_LOADING.search('_POP = resources.files("meterd").joinpath("lua", "broker_pop.lua")')
    assert not OWN_LOADING.search('client.register_script(script_source("ingest"))')
