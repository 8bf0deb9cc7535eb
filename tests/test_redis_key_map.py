"""Every Redis key is built by ``RedisKeys`` (meterd/core/redis_keys.py): the one map of the
key layout stays whole only if no other module spells a key.

An AST scan of src/meterd flags, outside redis_keys.py:
* an f-string or ``+`` that extends a ``RedisKeys`` member (``f"{keys.marker_prefix}{g}"``,
  ``keys.used(org, c) + ":u:"``), or a name holding a key (``f"{used_key}:u:{f}"``);
* an f-string that puts a key segment after a prefix (``f"{prefix}:used:..."``);
* a literal that reads like a key of the layout (``"meterd:pending"``).
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from meterd.core.redis_keys import RedisKeys

SRC = Path(str(resources.files("meterd")))
KEYS_MODULE = SRC / "core" / "redis_keys.py"

#: The members of RedisKeys that return a key, a key prefix or a hash tag.
MEMBERS = frozenset(
    name
    for name, value in vars(RedisKeys).items()
    if not name.startswith("_") and (isinstance(value, property) or inspect.isfunction(value))
) | {"prefix", "redis_prefix"}


def _segments() -> frozenset[str]:
    """The first segment after the prefix of every key RedisKeys spells (``dm``,
    ``used``, ``pending``...), read from redis_keys.py itself."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(KEYS_MODULE.read_text("utf-8"))):
        if isinstance(node, ast.JoinedStr) and len(node.values) >= 2:
            head, after = node.values[0], node.values[1]
            if (
                isinstance(head, ast.FormattedValue)
                and isinstance(head.value, ast.Attribute)
                and head.value.attr == "prefix"
                and isinstance(after, ast.Constant)
                and isinstance(after.value, str)
            ):
                found.add(after.value.split(":")[1])
    return frozenset(found)


SEGMENTS = _segments()
#: A literal key of the layout: "<prefix>:<segment>" or ":<segment>:..." (a piece of one).
_ALTERNATIVES = "|".join(map(re.escape, sorted(SEGMENTS)))
LITERAL_KEY = re.compile(rf"^[A-Za-z0-9_.-]*:({_ALTERNATIVES})(:|$)")


def _names_a_key(node: ast.expr) -> bool:
    """Whether ``node`` reads a RedisKeys member, or a variable named for one
    (``used_key``, ``marker_prefix``)."""
    if isinstance(node, ast.Call):
        node = node.func
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return name in MEMBERS or name.removesuffix("_key") in MEMBERS


def _is_text(node: ast.expr) -> bool:
    return isinstance(node, ast.JoinedStr) or (
        isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


def key_spellings(source: str) -> Iterator[tuple[int, str]]:
    """(line, reason) of each place ``source`` builds a Redis key itself."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.FormattedValue) and _names_a_key(head.value):
                yield node.lineno, f"f-string extends {ast.unparse(head.value)}"
            for part in node.values[1:]:
                if isinstance(part, ast.Constant) and LITERAL_KEY.match(str(part.value)):
                    yield node.lineno, f"f-string spells a key segment {part.value!r}"
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            if _names_a_key(node.left) and _is_text(node.right):
                yield node.lineno, f"{ast.unparse(node.left)} + text"
        elif _is_text(node) and LITERAL_KEY.match(str(getattr(node, "value", ""))):
            yield node.lineno, f"literal key {getattr(node, 'value', '')!r}"


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p != KEYS_MODULE and "migrations" not in p.parts)


def test_the_segments_are_read_from_redis_keys() -> None:
    assert {"dm", "used", "pending", "flush", "res", "events", "stats", "rl"} <= SEGMENTS


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.relative_to(SRC).as_posix())
def test_no_module_builds_a_redis_key_outside_redis_keys(path: Path) -> None:
    assert list(key_spellings(path.read_text("utf-8"))) == []


# The scan really fails: the code that built marker and UNIQUE_COUNT keys in
# storage/counters.py before they moved into RedisKeys, and other spellings.
OLD_SPELLINGS = [
    'self.client.hmget(f"{self.keys.marker_prefix}{g}", ["L", "p", "n", "left"])',
    'sample_keys += [f"{self.keys.marker_prefix}{g}:{i}" for i in range(0, shards, step)]',
    'key = f"{used_key}:u:{field}"',
    'key = self.keys.used(org, customer) + ":u:" + field',
    'key = f"{settings.redis_prefix}:pending"',
    'key = f"{prefix}:used:{tag}"',
    'key = "meterd:flush:seq"',
    'config = {"redbeat_key_prefix": f"{settings.redis_prefix}:redbeat:"}',
]


@pytest.mark.parametrize("code", OLD_SPELLINGS)
def test_the_scan_catches_a_key_built_outside_redis_keys(code: str) -> None:
    assert list(key_spellings(code)) != []


@pytest.mark.parametrize(
    "code",
    [
        'self.client.hmget(self.keys.marker_generation(g), ["L", "p"])',
        'message = f"{report.describe()}. meterd refuses to start"',
        'text = f"{name}: {exc}"',
        'address = f"{host}:{port} db {db}"',
        'sort = f"{sort_key}:{sort_type}"',
    ],
)
def test_the_scan_lets_other_text_be(code: str) -> None:
    assert list(key_spellings(code)) == []
