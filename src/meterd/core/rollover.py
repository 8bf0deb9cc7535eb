"""Rollover: what a renewed PRE_PAID term carries from the term before it, as a
function of that term's consumption (pure; no I/O).

A renewed term's limit is its renewal quantity plus
``MIN(rollover_max, MAX(remaining of the term before, rollover_min))``, where
the remaining is the term before's own limit (itself including what *it*
carried) less its consumption. Held units are not consumed: they do not reduce
what carries. Late events (within the late window) still change a term's
consumption, so the limit of term ``k`` follows them: it is computed back
along the chain of terms to one whose limit is final (a term closed past the
late window takes no more events).

Every figure here is in integer units of the feature's scale (``10^-k``), with
``-1`` for unlimited, as in the resolution data (``storage/resolution.py``).
``lua/ingest/rollover.lua`` is the Lua twin; ``tests/test_rollover_model.py``
holds the two together on random chains and against a reference model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

UNLIMITED = -1


def carried(limit_before: int, consumed_before: int, rollover_max: int, rollover_min: int) -> int:
    """What a term carries into the next one: ``MIN(rollover_max, MAX(remaining,
    rollover_min))``; an unlimited term before has unlimited remaining, so it carries
    ``rollover_max``. Overage (a negative remaining) carries ``rollover_min`` at most
    ``rollover_max``."""
    if limit_before < 0:
        return rollover_max
    remaining = limit_before - consumed_before
    return min(rollover_max, max(remaining, rollover_min))


def term_limit(
    base: int, limit_before: int, consumed_before: int, rollover_max: int, rollover_min: int
) -> int:
    """The limit of a renewed term whose renewal quantity is ``base`` (-1: unlimited,
    which stays unlimited), after a term of ``limit_before`` that consumed
    ``consumed_before``."""
    if base < 0:
        return UNLIMITED
    return base + carried(limit_before, consumed_before, rollover_max, rollover_min)


def chain_limits(
    final_limit: int,
    steps: Iterable[tuple[int, int]],
    rollover_max: int,
    rollover_min: int = 0,
) -> list[int]:
    """The limits of a run of consecutive terms: the first one's limit is final
    (``final_limit``); each step is ``(consumed of the term before, renewal quantity
    of this term)``. Returns the limits of every term of the run, the first included."""
    limits = [final_limit]
    for consumed_before, base in steps:
        limits.append(term_limit(base, limits[-1], consumed_before, rollover_max, rollover_min))
    return limits


def effective_limit(
    final_limit: int,
    consumed: Sequence[int],
    bases: Sequence[int],
    rollover_max: int,
    rollover_min: int = 0,
) -> int:
    """The limit of the last term of a run: ``consumed[i]`` is the consumption of the
    run's term ``i`` (the first is the one whose limit is final), ``bases[i]`` the
    renewal quantity of term ``i + 1``; ``len(consumed) == len(bases)``."""
    if len(consumed) != len(bases):
        raise ValueError("one consumption per renewed term")
    return chain_limits(final_limit, zip(consumed, bases, strict=True), rollover_max, rollover_min)[
        -1
    ]


#: The audit reason of the carries that became final (``storage/rollover.py``).
ROLLOVER_REASON = "rollover"


def carries_reason(carries: Sequence[tuple[str, str, str]]) -> str:
    """The audit reason of the carries one entitlement's renewed terms made final:
    each ``(carried quantity, start, end of the term it carried from)``, oldest first;
    ``rollover: carried 50 from the term 2026-10-10..2026-11-10 (final)``."""
    parts = [f"carried {qty} from the term {start}..{end}" for qty, start, end in carries]
    return f"{ROLLOVER_REASON}: {'; '.join(parts)} (final)"
