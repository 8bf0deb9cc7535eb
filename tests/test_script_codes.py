"""ingest.lua's return codes are named once, in ScriptCode, and match its header."""

from __future__ import annotations

import re

from meterd.lua import read_fragment
from meterd.services.counting import NOT_FINAL
from meterd.services.ingest import OUTCOMES as INGEST_OUTCOMES
from meterd.services.reserve import OUTCOMES as RESERVE_OUTCOMES
from meterd.storage.counters import ScriptCode


def header_codes() -> dict[str, str]:
    text = read_fragment("ingest")
    header = text.split("]]", 1)[0]
    block = header.split("Returns one character per event", 1)[1]
    return dict(re.findall(r"^  ([a-z])  (\w[\w ]*)", block, flags=re.MULTILINE))


def test_the_lua_header_lists_exactly_the_script_codes() -> None:
    assert set(header_codes()) == {code.value for code in ScriptCode}


def test_each_code_is_named_in_the_header_as_in_the_enum() -> None:
    for character, words in header_codes().items():
        name = ScriptCode(character).name.lower().replace("_", " ")
        assert words.strip().startswith(name), (character, words)


#: Codes only a hold or its settle answers (``services.holds`` maps them to errors).
SETTLE_ONLY = {
    ScriptCode.HOLD_EXPIRED,
    ScriptCode.HOLD_RELEASED,
    ScriptCode.HOLD_MISSING,
    ScriptCode.TOO_MANY_HOLDS,  # a hold's: raised as TooManyHoldsError (409)
}


def test_ingest_has_an_outcome_for_every_final_code_of_a_usage_count() -> None:
    strict_only = {ScriptCode.NO_ROOM, ScriptCode.CONFLICT}
    final = set(ScriptCode) - NOT_FINAL - strict_only - SETTLE_ONLY
    assert set(INGEST_OUTCOMES) == final


def test_reserve_has_an_outcome_for_every_final_code_of_a_strict_count() -> None:
    # A reservation is timed now, so it is never late; a conflict is raised (409).
    final = set(ScriptCode) - NOT_FINAL - {ScriptCode.LATE, ScriptCode.CONFLICT} - SETTLE_ONLY
    assert set(RESERVE_OUTCOMES) == final
